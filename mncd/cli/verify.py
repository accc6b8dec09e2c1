"""``mncctl verify``: check a signed PDF, or a file and its detached CMS signature, offline.

Exit codes: 0 every signature intact and anchored (J-LIS, or a CA given with ``--ca``),
7 a signature is invalid, 8 intact but not anchored. No daemon and no card are needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from mncd.cli.errors import ExitCode, UsageError

VERDICT_TEXT = {
    "valid": "valid (有効)",
    "untrusted": "intact, but not anchored at a known CA (検証できない認証局)",
    "invalid": "INVALID (無効)",
}


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "verify",
        help="verify a signed PDF or a detached CMS signature (offline)",
        description="Verify every signature of a PDF, or a file against its detached CMS "
        "signature, and the signer's certificate up to J-LIS's CAs (bundled) or a CA given "
        "with --ca. Exit codes: 0 valid, 7 invalid, 8 intact but not anchored.",
    )
    command.add_argument("file", type=Path, metavar="FILE", help="a signed PDF, or the file")
    command.add_argument(
        "--signature", type=Path, metavar="FILE.p7s",
        help="the detached CMS signature of FILE (default for a file that is not a PDF: "
        "FILE.p7s)",
    )  # fmt: skip
    command.add_argument(
        "--ca", type=Path, action="append", default=[], metavar="CA.pem",
        help="also trust this CA certificate (PEM or DER; e.g. the virtual card's test CA); "
        "may be repeated",
    )  # fmt: skip
    command.set_defaults(func=run)


def _is_pdf(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return b"%PDF-" in stream.read(1024)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from mncd import documents

    # pyHanko logs every untrusted path with a traceback; the report below says it in words.
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from mncd.documents.files import open_input

    anchors = [documents.TrustAnchor.from_file(path) for path in args.ca]
    signature: Path | None = args.signature
    if signature is None and not _is_pdf(args.file):
        candidate = args.file.with_name(args.file.name + ".p7s")
        if not args.file.is_file() or not candidate.exists():
            if args.file.is_file():
                raise UsageError(
                    f"{args.file} is not a PDF: give its detached signature with --signature"
                )
            open_input(args.file).close()  # says why it cannot be read
        signature = candidate
    if signature is None:
        result = asyncio.run(documents.verify_pdf(args.file, anchors))
    else:
        result = asyncio.run(documents.verify_cms(args.file, signature, anchors))
    print_report(result)
    return {
        documents.Verdict.VALID: ExitCode.OK,
        documents.Verdict.UNTRUSTED: ExitCode.UNTRUSTED,
        documents.Verdict.INVALID: ExitCode.INVALID,
    }[result.verdict]


def print_report(result: object) -> None:
    """The verification in words: each signature, then the verdict."""
    from mncd.documents import REVOCATION_NOTE, Verification

    assert isinstance(result, Verification)
    count = len(result.signatures)
    kind = "PDF" if result.kind == "pdf" else "file with a detached CMS signature"
    print(f"{result.file}: {kind}, {count} signature{'s' if count != 1 else ''}")
    for problem in result.problems:
        print(f"  problem: {problem}")
    for number, check in enumerate(result.signatures, 1):
        print(f"signature {number} ({check.label}): {VERDICT_TEXT[check.verdict.value]}")
        if check.signer:
            print(f"  signed by:  {check.signer}")
        if check.signed_at is not None:
            print(f"  signed at:  {check.signed_at.isoformat()} (as the signer's computer says)")
        if check.covers:
            print(f"  covers:     {check.covers}")
        if check.serial:
            print(f"  certificate: serial {check.serial.upper()}, issuer {check.issuer}")
        print(f"  chain:      {check.anchor or 'not anchored'}")
        for problem in check.problems:
            print(f"  problem: {problem}")
        for note in check.notes:
            print(f"  note: {note}")
    print(REVOCATION_NOTE)
    print(f"result: {VERDICT_TEXT[result.verdict.value]}")
