"""OpenSC's JPKI driver, an independent client, accepts the virtual card as a My Number Card."""

from __future__ import annotations

import glob
import os
import subprocess

import pytest


def opensc_module() -> str:
    found = glob.glob("/usr/lib/*/opensc-pkcs11.so") + glob.glob("/usr/lib/opensc-pkcs11.so")
    assert found, "OpenSC's PKCS#11 module is missing (Debian package opensc)"
    return found[0]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=os.environ.copy())


@pytest.fixture
def fresh_card(card):
    card.commands(clear=True)
    return card


def test_pkcs15_lists_both_certificates(fresh_card):
    listing = run("pkcs15-tool", "--list-certificates")
    assert listing.returncode == 0, listing.stderr
    for label in (
        "User Authentication Certificate",
        "Digital Signature Certificate",
        "User Authentication Certificate CA",
        "Digital Signature Certificate CA",
    ):
        assert f"[{label}]" in listing.stdout
    # Without the signing password OpenSC cannot read the signing certificate (no serial).
    assert listing.stdout.count("Encoded serial") == 3

    with_pin = run(
        "pkcs15-tool", "--list-certificates", "--verify-pin", "--auth-id", "02",
        "--pin", fresh_card.profile.sign_password,
    )  # fmt: skip
    assert with_pin.returncode == 0, with_pin.stderr
    assert with_pin.stdout.count("Encoded serial") == 4


def test_pkcs15_reports_pin_tries(insert_card):
    card = insert_card(auth_tries_left=2)
    pins = run("pkcs15-tool", "--list-pins")
    assert pins.returncode == 0, pins.stderr
    auth, sign = pins.stdout.split("PIN [Digital Signature PIN]")
    assert "Tries left     : 2" in auth
    assert "Tries left     : 5" in sign
    assert card.tries()["auth"] == 2


def test_pkcs11_signature_verifies_with_openssl(fresh_card, tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"signed by OpenSC through mncd's virtual card")
    signature = tmp_path / "sig"
    signed = run(
        "pkcs11-tool", "--module", opensc_module(),
        "--token-label", "JPKI (User Authentication PIN)",
        "--login", "--pin", fresh_card.profile.auth_pin,
        "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
        "-i", str(data), "-o", str(signature),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    cert = tmp_path / "auth.der"
    cert.write_bytes(fresh_card.certificates()["auth"])
    pubkey = tmp_path / "auth.pem"
    extracted = run("openssl", "x509", "-inform", "DER", "-in", str(cert), "-pubkey", "-noout")
    pubkey.write_text(extracted.stdout)
    verified = run(
        "openssl", "dgst", "-sha256", "-verify", str(pubkey), "-signature", str(signature),
        str(data),
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verified OK" in verified.stdout
