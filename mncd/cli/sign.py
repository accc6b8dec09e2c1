"""``mncctl sign``: sign with the signing certificate (署名用).

``--pdf IN -o OUT``  a signed PDF the Legal Affairs Bureau accepts (``--pades``: PAdES B-B,
                     B-T with ``--timestamp URL``; ``--field NAME``: the signature field)
``--cms FILE``       a detached CMS signature, ``FILE.p7s`` (CAdES-T with ``--timestamp URL``)
``FILE``             a raw PKCS#1 v1.5 signature (``FILE.sig``), for scripts

Each costs one PIN and one card signature. The signing certificate holds the holder's name,
address, birth date and sex: it is written only with ``--certificate``, 0600. Nothing is
overwritten without ``--force``; temporary files are removed on every way out (errors,
Ctrl-C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mncd.cli.errors import ExitCode, UsageError, VerificationError
from mncd.cli.files import read_payload, verify_signature
from mncd.cli.output import certificate_summary
from mncd.cli.pin import PinRequest, add_pin_arguments, call_with_pin
from mncd.cli.session import session
from mncd.cli.text import N_, _, subcommand
from mncd.documents.files import check_output, removed_on_signals, write_private

CERTIFICATE_NOTE = N_(
    "it holds your name, address, birth date and sex: share it only with whom it is for"
)
DOCUMENT_NOTE = N_(
    "it carries your signing certificate, with your name, address, birth date and sex"
)


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "sign",
        _("sign a PDF (--pdf), a file as CMS (--cms) or raw bytes with the signing certificate"),
        _("Sign with the signing certificate: --pdf gives a signed PDF the Legal Affairs Bureau "
          "accepts, --cms a detached CMS signature (.p7s), FILE alone a raw PKCS#1 v1.5 "
          "signature for scripts. Needs the signing password (6 to 16 characters: capital "
          "letters A-Z and digits 0-9); each signature uses one."),
        "mncctl sign --pdf form.pdf -o signed.pdf",
        "mncctl sign --cms contract.txt",
        "printf '%s\\n' \"$PASSWORD\" | mncctl sign --pin-stdin data.bin",
    )  # fmt: skip
    command.add_argument("file", type=Path, nargs="?", metavar="FILE", help=_("raw mode: the file"))
    what = command.add_mutually_exclusive_group()
    what.add_argument("--pdf", type=Path, metavar="IN.pdf", help=_("sign this PDF (-o OUT.pdf)"))
    what.add_argument("--cms", type=Path, metavar="FILE", help=_("detached CMS signature of FILE"))
    command.add_argument(
        "--output", "-o", type=Path, metavar="OUT",
        help=_("the signed PDF (required with --pdf); default FILE.p7s (--cms), FILE.sig (raw)"),
    )  # fmt: skip
    command.add_argument(
        "--certificate", "--cert-output", dest="certificate", type=Path, metavar="CRT",
        help=_("also write the signing certificate (DER, 0600; it holds personal data)"),
    )  # fmt: skip
    command.add_argument("--force", action="store_true", help=_("replace existing output files"))
    command.add_argument(
        "--timestamp", metavar="URL",
        help=_("add an RFC 3161 timestamp from this authority (http:// or https://), so the "
               "signature can be proven after the certificate expires: with --pades (PAdES B-T) "
               "or --cms (CAdES-T)"),
    )  # fmt: skip
    pdf = command.add_argument_group(_("PDF signatures (--pdf)"))
    pdf.add_argument("--reason", metavar="TEXT", help=_("/Reason of the signature"))
    pdf.add_argument("--location", metavar="TEXT", help=_("/Location of the signature"))
    pdf.add_argument(
        "--name", metavar="TEXT", help=_("/Name (default: the name in the certificate)")
    )
    pdf.add_argument(
        "--pades", action="store_true",
        help=_("PAdES B-B (ETSI.CAdES.detached) instead of adbe.pkcs7.detached, which the "
               "Legal Affairs Bureau requires"),
    )  # fmt: skip
    pdf.add_argument(
        "--field", metavar="NAME",
        help=_("the signature field to sign (default: the document's only empty one, else a new "
               "invisible field)"),
    )  # fmt: skip
    add_pin_arguments(command, "sign")
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = [name for name in ("file", "pdf", "cms") if getattr(args, name) is not None]
    if len(given) != 1:
        raise UsageError(_("Give one of FILE, --pdf IN.pdf or --cms FILE."))
    if args.pdf is None and (
        args.reason or args.location or args.name or args.pades or args.field is not None
    ):
        raise UsageError(_("--reason, --location, --name, --pades and --field go with --pdf."))
    if args.timestamp and args.cms is None and not args.pades:
        from mncd.documents.pdf import timestamp_needs_pades

        raise UsageError(timestamp_needs_pades())
    if args.pdf is not None or args.cms is not None:
        if args.hash != "sha256":
            raise UsageError(_("Documents are signed with SHA-256; --hash is for raw signatures."))
        with removed_on_signals():
            return sign_document(args)
    with removed_on_signals():
        return sign_raw(args)


def _check_certificate_output(args: argparse.Namespace, *inputs: Path) -> None:
    if args.certificate is not None:
        check_output(args.certificate, force=args.force, inputs=inputs)


def _write_certificate(args: argparse.Namespace, certificate: bytes) -> None:
    if args.certificate is None:
        return
    write_private(args.certificate, certificate, force=args.force)
    summary = certificate_summary(certificate)
    if summary:
        print(_("certificate: {path} ({summary})").format(path=args.certificate, summary=summary))
    else:
        print(_("certificate: {path}").format(path=args.certificate))
    print(_("  note: {note}").format(note=_(CERTIFICATE_NOTE)))


def sign_raw(args: argparse.Namespace) -> int:
    """A raw PKCS#1 v1.5 signature (DigestInfo of the hash, padded by the card)."""
    source: Path = args.file
    sig_path: Path = args.output or Path(f"{source}.sig")
    payload = read_payload(source, args.hash)
    check_output(sig_path, force=args.force, inputs=(source,))
    _check_certificate_output(args, source)
    with session() as (call, card):
        signed = call_with_pin(
            PinRequest.from_args(args, "sign"),
            call,
            card,
            lambda pin, last_try: card.sign(
                payload.data, args.hash, pin=pin, digest=payload.is_digest, allow_last_try=last_try
            ),
        )
    if not verify_signature(
        signed.certificate, signed.signature, payload.data, args.hash, prehashed=payload.is_digest
    ):
        raise VerificationError(
            _("The signature does not verify against the signing certificate; nothing was written.")
        )
    write_private(sig_path, signed.signature, force=args.force)
    if payload.is_digest:
        how = _("{hash} digest computed locally").format(hash=args.hash)
    else:
        how = args.hash
    print(_("signed {file} (raw PKCS#1 v1.5 signature, {how})").format(file=source, how=how))
    print(_("signature:   {path}").format(path=sig_path))
    _write_certificate(args, signed.certificate)
    return ExitCode.OK


def _warn(lines: list[str], shown: set[str]) -> None:
    for line in lines:
        if line not in shown:
            shown.add(line)
            print(_("mncctl: warning: {line}").format(line=line), file=sys.stderr)


def sign_document(args: argparse.Namespace) -> int:
    """``--pdf`` or ``--cms``: a signed document built by pyHanko around one card signature."""
    from mncd import documents
    from mncd.documents.cms import default_output
    from mncd.documents.files import open_input
    from mncd.documents.pdf import choose_field, open_pdf
    from mncd.documents.signer import check_status
    from mncd.documents.timestamps import check_authority

    source: Path = args.pdf if args.pdf is not None else args.cms
    if args.pdf is not None:
        if args.output is None:
            raise UsageError(_("--pdf needs the output file: -o OUT.pdf"))
        output: Path = args.output
        with open_input(source) as stream:
            # Not a PDF, damaged, encrypted, locked, no field to choose: before any PIN.
            choose_field(open_pdf(stream, source), source, args.field)
    else:
        output = args.output or default_output(source)
        open_input(source).close()
    check_output(output, force=args.force, inputs=(source,))
    _check_certificate_output(args, source, output)
    shown: set[str] = set()
    with session() as (call, card):
        if args.timestamp:
            call(check_authority(args.timestamp))  # there and answering: before any PIN
        # An expired or invalidated certificate is refused before any PIN is asked.
        warning = check_status(call(card.get_status())).warning
        _warn([warning] if warning else [], shown)

        def operation(pin: str | None, last_try: bool) -> Any:
            options = documents.PinOptions(pin=pin, allow_last_try=last_try)
            if args.pdf is not None:
                return documents.sign_pdf(
                    card, source, output, reason=args.reason, location=args.location,
                    name=args.name, pades=args.pades, field=args.field,
                    timestamp_url=args.timestamp, force=args.force, pin=options,
                )  # fmt: skip
            return documents.sign_cms(
                card, source, output, force=args.force, pin=options, timestamp_url=args.timestamp
            )

        result = call_with_pin(PinRequest.from_args(args, "sign"), call, card, operation)
    _warn(result.warnings, shown)
    if args.pdf is not None:
        print(
            _("signed {file} → {output} ({kind}, SHA-256)").format(
                file=source, output=output, kind=result.subfilter
            )
        )
        print(f"  /Name: {result.name}")
        print(_("  field: {field}").format(field=result.field_name))
    else:
        print(
            _("signed {file} → {output} (detached CMS, SHA-256)").format(file=source, output=output)
        )
    print(_("  signing time: {time}").format(time=result.signing_time.isoformat()))
    if args.timestamp:
        print(_("  timestamp: from {url}").format(url=args.timestamp))
    print(
        _("  note: {file} is readable by you only (0600): {note}").format(
            file=output, note=_(DOCUMENT_NOTE)
        )
    )
    _write_certificate(args, result.certificate)
    return ExitCode.OK
