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
from mncd.cli.text import _, subcommand

CHALLENGE_SIZE = 32


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "auth", _("authenticate with the user-authentication certificate"),
        _("Sign a challenge with the user-authentication certificate and verify the signature "
          "here. Needs the user-authentication PIN (4 digits)."),
        "mncctl auth", "mncctl auth --challenge-file challenge.bin -o challenge.sig",
    )  # fmt: skip
    command.add_argument(
        "--challenge-file", type=Path, metavar="F",
        help=_("challenge (default: 32 random bytes)"),
    )  # fmt: skip
    command.add_argument("--output", "-o", type=Path, metavar="SIG", help=_("write the signature"))
    command.add_argument("--cert-output", type=Path, metavar="CRT", help=_("write the certificate"))
    add_pin_arguments(command, "auth")
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.challenge_file is not None:
        try:
            challenge = args.challenge_file.read_bytes()
        except OSError as exc:
            raise UsageError(
                _("Cannot read {path}: {reason}").format(
                    path=args.challenge_file, reason=exc.strerror or exc
                )
            ) from exc
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
    if args.challenge_file:
        origin = str(args.challenge_file)
    else:
        origin = _("random {n} bytes").format(n=CHALLENGE_SIZE)
    # Checked before anything is written: a file on disk is a signature that verified.
    if not verify_signature(signed.certificate, signed.signature, challenge, args.hash):
        raise VerificationError(
            _("The signature does not verify against the user-authentication certificate.")
        )
    summary = certificate_summary(signed.certificate)
    if summary:
        made = _(
            "authentication signature made over the challenge ({origin}, {hash}) with the "
            "certificate of {summary}"
        )
    else:
        made = _("authentication signature made over the challenge ({origin}, {hash})")
    print(made.format(origin=origin, hash=args.hash, summary=summary))
    if args.output is not None:
        write(args.output, signed.signature)
        print(_("signature:   {path}").format(path=args.output))
    if args.cert_output is not None:
        write(args.cert_output, signed.certificate)
        print(_("certificate: {path}").format(path=args.cert_output))
    print(_("verified"))
    return ExitCode.OK
