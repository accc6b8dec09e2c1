"""mncctl, the CLI for people, against the real daemon, bus and virtual card."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

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


def watching(address: str, card, until: str, *args: str, **env: str) -> list[str]:
    """The lines of ``mncctl watch ARGS`` from its start until the card was taken out and a
    line with ``until`` came."""
    environment = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANGUAGE": "", **env}
    watch = subprocess.Popen([MNCCTL, "watch", *args], stdout=subprocess.PIPE, text=True,
                             env=environment)  # fmt: skip
    lines: list[str] = []
    try:
        threading.Thread(target=lambda: lines.extend(watch.stdout), daemon=True).start()
        wait_for(lambda: lines, "watch to start")
        card.remove()
        wait_for(lambda: any(until in line for line in lines), "the removal")
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    return lines


def test_watch_prints_card_events_for_people_in_japans_time(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    removed = f"{card.reader}からカードが取り出されました。"
    lines = watching(daemon.bus.address, card, removed, LANG="ja_JP.UTF-8", TZ="UTC")
    stamp = r"(\d{4}-\d\d-\d\d) \d\d:\d\d:\d\d "
    assert re.fullmatch(stamp + "現在の状態: マイナンバーカードがあります。\n", lines[0]), lines
    matching = [line for line in lines if removed in line]
    assert len(matching) == 1, lines
    line = matching[0]
    japan = dt.datetime.now(ZoneInfo("Asia/Tokyo"))
    days = {japan.date().isoformat(), (japan - dt.timedelta(minutes=1)).date().isoformat()}
    assert re.match(stamp, line)[1] in days  # type: ignore[index]


def test_watch_raw_keeps_the_daemons_signals(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    lines = watching(daemon.bus.address, card, "CardRemoved", "--raw", LANG="ja_JP.UTF-8")
    assert "Status" in lines[0]
    assert any(f'CardRemoved "{card.reader}"' in line for line in lines)
