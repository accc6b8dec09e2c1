"""Runs mncd's main job on the built-in virtual card, with no hardware.

Starts an isolated pcscd with the vpcd reader, inserts a virtual My Number Card, reads what the
daemon reads on insertion (certificates, expiry, PIN tries left), then signs a message with the
user-authentication key and verifies the signature against the card's certificate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from . import certs
from .card.digestinfo import digest, digest_info
from .card.jpki import AUTH_KEY, SIGN_KEY, Certificate, JpkiSession
from .card.pcsc import PcscContext
from .vcard.profile import CardProfile
from .vcard.sandbox import PcscSandbox


def _wait_for_card(context: PcscContext, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reader in context.list_readers():
            try:
                context.connect(reader).close()
                return reader
            except Exception:
                continue
        time.sleep(0.1)
    raise TimeoutError("the virtual card did not appear")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mncd-demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="virtual-card profile setting (see 'mncd-vcard settings')",
    )
    args = parser.parse_args(argv)
    profile = CardProfile().with_overrides(args.set)

    with PcscSandbox() as sandbox:
        os.environ.update(sandbox.env)
        sandbox.control.insert(profile)
        with PcscContext() as context:
            reader = _wait_for_card(context)
            with context.connect(reader) as conn:
                session = JpkiSession(conn)
                token = session.read_token_info()
                auth_der = session.read_certificate(Certificate.AUTH)
                tries = {k.name: session.pin_tries_left(k) for k in (AUTH_KEY, SIGN_KEY)}
                print(f"reader   {reader}")
                print(f"ATR      {conn.atr.hex().upper()}")
                print(f"token    {token.label} ({token.kind.value})")
                summary = certs.summarize(auth_der)
                print("利用者証明用電子証明書 (user authentication certificate)")
                print(
                    f"  valid    {summary.not_before:%Y-%m-%d} – {summary.not_after:%Y-%m-%d}"
                    f" ({summary.days_left()} days left)"
                )
                print(f"  serial   {summary.serial}")
                print(f"  issuer   {summary.issuer}")
                print(f"  sha256   {summary.fingerprint}")
                print(f"PIN tries left: auth {tries['auth']}/3, sign {tries['sign']}/5")

                message = b"mncd demo: hello from the virtual My Number Card"
                with conn.transaction(reset_after=True):
                    session.verify_pin(AUTH_KEY, profile.auth_pin)
                    signature = session.sign(
                        AUTH_KEY, digest_info("sha256", digest("sha256", message))
                    )
        public_key = x509.load_der_x509_certificate(auth_der).public_key()
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            print("signature did NOT verify", file=sys.stderr)
            return 1
        print(
            f"signed {len(message)} bytes with the auth key: signature verified "
            f"against the certificate ({len(signature)} bytes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
