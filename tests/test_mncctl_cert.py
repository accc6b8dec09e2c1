"""``mncctl cert show`` and ``mncctl cert export`` against the real daemon and virtual card:
details in Japan's calendar, personal data only on a terminal and only after the signing
password, files that never overwrite silently and that are private when they hold personal
data."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from cryptography import x509
from faultkit import verifies_with_pin
from test_daemon_dbus import wait_state
from test_mncctl_pin import run_in_terminal
from test_mncctl_pin_change import mncctl

ADDRESS = "東京都千代田区千代田一丁目一番地"


def test_show_the_public_certificates_as_json(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    result = mncctl(daemon.bus.address, "cert", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == {"auth", "auth-ca", "sign-ca"}
    certificates = card.certificates()
    for which in shown:
        assert shown[which]["fingerprint"] == hashlib.sha256(certificates[which]).hexdigest()
        parsed = x509.load_der_x509_certificate(certificates[which])
        assert shown[which]["serial"] == f"{parsed.serial_number:X}"
    auth = shown["auth"]
    start, end = card.profile.validity()
    # Japan's calendar: the last day ends at 23:59:59 JST, whatever the machine's zone.
    assert auth["not_after"] == end.isoformat() == f"{end.date()}T23:59:59+09:00"
    assert auth["not_before"] == start.isoformat()
    assert auth["days_left"] == card.profile.not_after_days
    assert auth["key"] == "RSA 2048 bits" and auth["key_usage"] == ["digitalSignature"]
    assert shown["auth-ca"]["ca"] is True and "keyCertSign" in shown["auth-ca"]["key_usage"]
    assert verifies_with_pin(card.commands()) == 0


def test_show_for_people_counts_days_in_japan(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "cert", "show", "auth", TZ="America/Los_Angeles")
    assert result.returncode == 0, result.stderr
    end = card.profile.validity()[1]
    until = next(line for line in result.stdout.splitlines() if "Valid until" in line)
    assert until.endswith(f"{end.date()} 23:59:59 JST ({card.profile.not_after_days} days left)")
    assert "  SHA-256      " in result.stdout


def test_the_signing_certificate_hides_personal_data_off_a_terminal(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "cert", "show", "sign", "--pin-stdin", stdin="ABC123\n")
    assert result.returncode == 0, result.stderr
    assert "shown only on a terminal" in result.stdout
    for secret in (ADDRESS, "花子", "1990-04-01", "Chiyoda", "ABC123"):
        assert secret not in result.stdout + result.stderr
    fingerprint = hashlib.sha256(card.certificates()["sign"]).hexdigest()
    assert fingerprint in result.stdout
    as_json = json.loads(
        mncctl(
            daemon.bus.address, "cert", "show", "sign", "--json", "--pin-stdin", stdin="ABC123\n"
        ).stdout
    )
    assert as_json["sign"]["personal_data"] is None and as_json["sign"]["subject"] is None
    assert as_json["sign"]["personal_data_withheld"] is True
    # Never cached: nothing of it on disk.
    for path in daemon.state_dir.rglob("*"):
        if path.is_file():
            assert ADDRESS.encode() not in path.read_bytes()


def test_the_signing_certificate_shows_personal_data_on_a_terminal(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    term = run_in_terminal(daemon.bus.address, "cert", "show", "sign")
    try:
        term.wait("Signing password (6 to 16 characters")
        term.type("ABC123", "Enter")
        screen = term.wait("[exit ")
    finally:
        term.close()
    assert "[exit 0]" in screen, screen
    assert ADDRESS in screen and "花子" in screen
    assert "  Birth date   1990-04-01" in screen and "  Sex          female" in screen
    assert "L=Chiyoda-ku" in screen  # the subject names the holder's city
    assert "ABC123" not in screen


def test_a_wrong_signing_password_shows_nothing(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "cert", "show", "sign", "--pin-stdin", stdin="WRONG9\n")
    assert result.returncode == 4 and "4 tries left" in result.stderr
    assert result.stdout == ""


def test_export_of_the_signing_certificate_is_private_and_never_overwrites(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "sign.der"
    result = mncctl(daemon.bus.address, "cert", "export", "sign", "-o", str(target), "--der",
                    "--pin-stdin", stdin="ABC123\n")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == card.certificates()["sign"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "readable only by you" in result.stdout
    card.commands(clear=True)
    again = mncctl(daemon.bus.address, "cert", "export", "sign", "-o", str(target),
                   "--pin-stdin", stdin="ABC123\n")  # fmt: skip
    assert again.returncode == 2 and "exists: add --force to replace it" in again.stderr
    assert card.commands() == []  # refused before the password was used
    assert target.read_bytes() == card.certificates()["sign"]
    forced = mncctl(daemon.bus.address, "cert", "export", "sign", "-o", str(target), "--force",
                    "--pin-stdin", stdin="ABC123\n")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    pem = target.read_bytes()
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")  # PEM by default
    assert x509.load_pem_x509_certificate(pem) == x509.load_der_x509_certificate(
        card.certificates()["sign"]
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in exports.iterdir()] == ["sign.der"]  # no temporary left behind


@pytest.mark.parametrize("which", ["auth", "auth-ca", "sign-ca"])
def test_export_of_a_public_certificate_needs_no_password(daemon, card, tmp_path, which):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    target = tmp_path / f"{which}.pem"
    result = mncctl(daemon.bus.address, "cert", "export", which, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert x509.load_pem_x509_certificate(target.read_bytes()) == (
        x509.load_der_x509_certificate(card.certificates()[which])
    )
    assert verifies_with_pin(card.commands()) == 0
