"""``mncctl auth``: sign a challenge with the user-authentication certificate (利用者証明用) and
verify it locally."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mncd.cli.errors import ExitCode, UsageError, VerificationError
from mncd.cli.files import check_output, verify_signature, write
from mncd.cli.output import certificate_summary
from mncd.cli.pin import PinRequest, add_pin_arguments, call_with_pin
from mncd.cli.session import session

CHALLENGE_SIZE = 32


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "auth", help="authenticate with the user authentication certificate (利用者証明用)"
    )
    command.add_argument(
        "--challenge-file", type=Path, metavar="F", help="challenge (default: 32 random bytes)"
    )
    command.add_argument("--output", "-o", type=Path, metavar="SIG", help="write the signature")
    command.add_argument("--cert-output", type=Path, metavar="CRT", help="write the certificate")
    add_pin_arguments(command)
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.challenge_file is not None:
        try:
            challenge = args.challenge_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.challenge_file}: {exc.strerror or exc}") from exc
    else:
        challenge = os.urandom(CHALLENGE_SIZE)
    for path in (args.output, args.cert_output):
        if path is not None:
            check_output(path)
    with session() as (call, card):
        signed = call_with_pin(
            PinRequest.from_args(args, "auth"),
            call,
            card,
            lambda pin, last_try: card.authenticate(
                challenge, args.hash, pin=pin, allow_last_try=last_try
            ),
        )
    origin = str(args.challenge_file) if args.challenge_file else f"random {CHALLENGE_SIZE} bytes"
    # Checked before anything is written: a file on disk is a signature that verified.
    if not verify_signature(signed.certificate, signed.signature, challenge, args.hash):
        raise VerificationError(
            "the signature does not verify against the authentication certificate"
        )
    summary = certificate_summary(signed.certificate)
    print(
        f"authentication signature made over the challenge ({origin}, {args.hash})"
        + (f" with the certificate of {summary}" if summary else "")
    )
    if args.output is not None:
        write(args.output, signed.signature)
        print(f"signature:   {args.output}")
    if args.cert_output is not None:
        write(args.cert_output, signed.certificate)
        print(f"certificate: {args.cert_output}")
    print("verified")
    return ExitCode.OK
