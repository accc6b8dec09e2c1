"""``mncctl sign``: sign a file with the signing certificate (署名用)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mncd.cli.errors import ExitCode, VerificationError
from mncd.cli.files import check_output, read_payload, verify_signature, write
from mncd.cli.output import certificate_summary
from mncd.cli.pin import PinRequest, add_pin_arguments, call_with_pin
from mncd.cli.session import session


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser("sign", help="sign a file with the signing certificate (署名用)")
    command.add_argument("file", type=Path, metavar="FILE", help="the file to sign")
    command.add_argument("--output", "-o", type=Path, metavar="SIG", help="default: FILE.sig")
    command.add_argument("--cert-output", type=Path, metavar="CRT", help="default: FILE.crt")
    add_pin_arguments(command)
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source: Path = args.file
    sig_path: Path = args.output or Path(f"{source}.sig")
    crt_path: Path = args.cert_output or Path(f"{source}.crt")
    payload = read_payload(source, args.hash)
    for path in (sig_path, crt_path):
        check_output(path)
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
        raise VerificationError("the signature does not verify against the signing certificate")
    write(sig_path, signed.signature)
    write(crt_path, signed.certificate)
    how = f"{args.hash} digest computed locally" if payload.is_digest else args.hash
    print(f"signed {source} ({how})")
    print(f"signature:   {sig_path}")
    summary = certificate_summary(signed.certificate)
    print(f"certificate: {crt_path}" + (f" ({summary})" if summary else ""))
    return ExitCode.OK
