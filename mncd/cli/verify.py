"""``mncctl verify``: check a signed PDF, or a file and its detached CMS signature, offline.

Each signature in three parts: intact, trusted (a J-LIS signing CA, or one given with ``--ca``),
valid in time (at the time an RFC 3161 timestamp proves, otherwise now). Exit codes: 0 valid,
7 invalid, 8 intact but not anchored, 9 expired or revoked with no timestamp proving the
signature came before, 10 no signature. No daemon and no card are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from mncd.cli.errors import ExitCode, UsageError
from mncd.cli.text import _, subcommand


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "verify", _("verify a signed PDF or a detached CMS signature (offline)"),
        _("Verify every signature of a PDF, or a file against its detached CMS signature "
          "(FILE.p7s beside it is found): intact, trusted (J-LIS's signing CAs, bundled, or a CA "
          "given with --ca) and valid in time (when an RFC 3161 timestamp proves it, otherwise "
          "now). Needs no card and no PIN. Exit codes: 0 valid, 7 invalid, 8 intact but not "
          "anchored, 9 the certificate is expired or revoked and no timestamp proves the "
          "signature came before, 10 no signature."),
        "mncctl verify signed.pdf", "mncctl verify contract.txt --signature contract.txt.p7s",
    )  # fmt: skip
    command.add_argument("file", type=Path, metavar="FILE", help=_("a signed PDF, or the file"))
    command.add_argument(
        "--signature", type=Path, metavar="FILE.p7s",
        help=_("the detached CMS signature of FILE (default: FILE.p7s when it exists)"),
    )  # fmt: skip
    command.add_argument(
        "--ca", type=Path, action="append", default=[], metavar="CA.pem",
        help=_("also trust this CA certificate (PEM or DER; e.g. the virtual card's test CA); "
               "may be repeated"),
    )  # fmt: skip
    command.add_argument(
        "--tsa-ca", type=Path, action="append", default=[], metavar="CA.pem",
        help=_("also trust timestamps from authorities under this CA (the system's CAs are "
               "trusted); may be repeated"),
    )  # fmt: skip
    command.add_argument(
        "--crl", type=Path, action="append", default=[], metavar="CRL",
        help=_("a certificate revocation list of the signer's CA (PEM or DER); may be repeated"),
    )  # fmt: skip
    command.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    command.set_defaults(func=run)


def _is_pdf(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return b"%PDF-" in stream.read(1024)
    except OSError:
        return False


def detached_signature(file: Path, given: Path | None) -> Path | None:
    """The .p7s to check ``file`` against: the one given, else ``FILE.p7s`` when it exists;
    None for a PDF without one (its embedded signatures are checked)."""
    if given is not None:
        return given
    candidate = file.with_name(file.name + ".p7s")
    if candidate.is_file():
        return candidate
    if _is_pdf(file) or not file.is_file():
        return None
    raise UsageError(
        _("{file} is not a PDF: give its detached signature with --signature").format(file=file)
    )


#: Exit codes by verdict value.
EXIT_CODES = {
    "valid": ExitCode.OK,
    "untrusted": ExitCode.UNTRUSTED,
    "expired": ExitCode.EXPIRED,
    "invalid": ExitCode.INVALID,
    "no-signature": ExitCode.NO_SIGNATURE,
}


def run(args: argparse.Namespace) -> int:
    from mncd import documents
    from mncd.documents.files import open_input
    from mncd.documents.report import report_lines

    # pyHanko logs every untrusted path with a traceback; the report below says it in words.
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    open_input(args.file).close()  # says why it cannot be read
    options = documents.VerifyOptions(
        anchors=[documents.TrustAnchor.from_file(path) for path in args.ca],
        tsa_anchors=[documents.TrustAnchor.from_file(path) for path in args.tsa_ca],
        crls=[documents.load_crl(path) for path in args.crl],
    )
    signature = detached_signature(args.file, args.signature)
    if signature is None:
        result = asyncio.run(documents.verify_pdf(args.file, options))
    else:
        result = asyncio.run(documents.verify_cms(args.file, signature, options))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report_lines(result)))
    return EXIT_CODES[result.verdict.value]
