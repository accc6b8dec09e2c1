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
from mncd.cli.text import N_, Texts, _, ngettext, subcommand
from mncd.jpki.calendar import japan

VERDICT_TEXT = Texts(
    {
        "valid": N_("valid"),
        "untrusted": N_("intact, but not anchored at a known CA"),
        "invalid": N_("INVALID"),
    }
)


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "verify", _("verify a signed PDF or a detached CMS signature (offline)"),
        _("Verify every signature of a PDF, or a file against its detached CMS signature, and "
          "the signer's certificate up to J-LIS's CAs (bundled) or a CA given with --ca. Needs "
          "no card and no PIN. Exit codes: 0 valid, 7 invalid, 8 intact but not anchored."),
        "mncctl verify signed.pdf", "mncctl verify contract.txt --signature contract.txt.p7s",
    )  # fmt: skip
    command.add_argument("file", type=Path, metavar="FILE", help=_("a signed PDF, or the file"))
    command.add_argument(
        "--signature", type=Path, metavar="FILE.p7s",
        help=_("the detached CMS signature of FILE (default for a file that is not a PDF: "
               "FILE.p7s)"),
    )  # fmt: skip
    command.add_argument(
        "--ca", type=Path, action="append", default=[], metavar="CA.pem",
        help=_("also trust this CA certificate (PEM or DER; e.g. the virtual card's test CA); "
               "may be repeated"),
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
                    _("{file} is not a PDF: give its detached signature with --signature").format(
                        file=args.file
                    )
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
    from mncd.documents import Verification, revocation_note

    assert isinstance(result, Verification)
    count = len(result.signatures)
    kind = _("PDF") if result.kind == "pdf" else _("file with a detached CMS signature")
    signatures = ngettext("{n} signature", "{n} signatures", count).format(n=count)
    print(
        _("{file}: {kind}, {signatures}").format(file=result.file, kind=kind, signatures=signatures)
    )
    for problem in result.problems:
        print(_("  problem: {problem}").format(problem=problem))
    for number, check in enumerate(result.signatures, 1):
        print(
            _("signature {number} ({label}): {verdict}").format(
                number=number, label=check.label, verdict=VERDICT_TEXT[check.verdict.value]
            )
        )
        if check.signer:
            print(_("  signed by:  {signer}").format(signer=check.signer))
        if check.signed_at is not None:
            print(
                _("  signed at:  {time} (as the signer's computer says)").format(
                    time=check.signed_at.astimezone(japan()).isoformat()
                )
            )
        if check.covers:
            print(_("  covers:     {covers}").format(covers=check.covers))
        if check.serial:
            print(
                _("  certificate: serial {serial}, issuer {issuer}").format(
                    serial=check.serial.upper(), issuer=check.issuer
                )
            )
        print(_("  chain:      {chain}").format(chain=check.anchor or _("not anchored")))
        for problem in check.problems:
            print(_("  problem: {problem}").format(problem=problem))
        for note in check.notes:
            print(_("  note: {note}").format(note=note))
    print(revocation_note())
    print(_("result: {verdict}").format(verdict=VERDICT_TEXT[result.verdict.value]))
