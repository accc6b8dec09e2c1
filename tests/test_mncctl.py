"""mncctl, the CLI for people, against the real daemon, bus and virtual card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from busstack import PrivateBus, wait_for
from test_daemon_dbus import wait_state

MNCCTL = str(Path(sys.executable).with_name("mncctl"))


def mncctl(address: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANG": "C.UTF-8", "LANGUAGE": ""}
    return subprocess.run(
        [MNCCTL, *args], input=stdin, capture_output=True, text=True, timeout=60, env=env
    )


def test_status_for_people_and_as_json(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    human = mncctl(daemon.bus.address, "status")
    assert human.returncode == 0, human.stderr
    assert "User-authentication certificate" in human.stdout
    assert "Signing certificate" in human.stdout
    assert f"({card.profile.not_after_days} days left)" in human.stdout
    # the signing certificate comes only with the signing password: how it becomes known
    assert "it becomes known the first time you sign" in human.stdout
    as_json = json.loads(mncctl(daemon.bus.address, "status", "--json").stdout)
    assert as_json["state"] == "card-present"
    assert as_json["auth"]["pin_tries_left"] == 3
    assert as_json["sign"]["state"] == "unknown"
    assert as_json["sign"]["days_left"] is None and as_json["sign"]["not_after"] is None


def test_sign_writes_a_signature_openssl_verifies(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    document = tmp_path / "contract.txt"
    document.write_text("契約書 / contract\n")
    cert = tmp_path / "sign.crt"
    result = mncctl(
        daemon.bus.address, "sign", str(document), "--certificate", str(cert), "--pin-stdin",
        stdin=card.profile.sign_password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert card.profile.sign_password not in result.stdout + result.stderr
    assert cert.read_bytes() == card.certificates()["sign"]
    pubkey = tmp_path / "sign.pem"
    pubkey.write_text(
        subprocess.run(
            ["openssl", "x509", "-inform", "DER", "-in", str(cert), "-pubkey", "-noout"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    verified = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(pubkey), "-signature",
         f"{document}.sig", str(document)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Verified OK" in verified.stdout


def test_auth_verifies_and_wrong_pin_is_exit_4(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    ok = mncctl(daemon.bus.address, "auth", "--pin-stdin", stdin=card.profile.auth_pin + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout
    wrong = mncctl(daemon.bus.address, "auth", "--pin-stdin", stdin="9999\n")
    assert wrong.returncode == 4
    assert "2 tries left" in wrong.stderr and "Traceback" not in wrong.stderr
    assert "9999" not in wrong.stderr


def test_no_card_is_exit_1(daemon):
    wait_state(daemon.bus.address, "no-card")
    result = mncctl(daemon.bus.address, "auth", "--pin-stdin", stdin="1234\n")
    assert result.returncode == 1
    assert result.stderr.startswith("mncctl: ") and "Traceback" not in result.stderr


def test_no_daemon_is_exit_3(tmp_path):
    bus = PrivateBus(tmp_path)
    try:
        result = mncctl(bus.address, "status")
    finally:
        bus.stop()
    assert result.returncode == 3
    assert result.stderr.startswith("mncctl: ")


def test_watch_prints_card_events(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address}
    watch = subprocess.Popen([MNCCTL, "watch"], stdout=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True).start()
        wait_for(lambda: any("Status" in line for line in lines), "watch to start")
        card.remove()
        wait_for(lambda: any("CardRemoved" in line for line in lines), "CardRemoved line")
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    assert any(card.reader in line for line in lines if "CardRemoved" in line)
