"""The README's Python example, run as written against the daemon and the virtual card."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from busstack import daemon_on_private_bus
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("From Python, `mncd.client`")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


def run_example(address: str, tmp_path: Path) -> subprocess.CompletedProcess:
    example = tmp_path / "example.py"
    example.write_text(python_example())
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
    return subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, env=env
    )


def test_python_api_example_signs_with_the_pin_from_the_daemons_dialog(tmp_path, sandbox, card):
    pinentry = ScriptedPinentry(tmp_path / "pinentry", [card.profile.sign_password])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = run_example(daemon.bus.address, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"card-present valid {card.profile.not_after_days}"
    assert lines[1] == "256 bytes, verified by the daemon"
    assert any("sign a document" in text for text in pinentry.descriptions())
    assert card.profile.sign_password not in result.stdout + result.stderr


def test_python_api_example_reports_a_wrong_pin(tmp_path, sandbox, insert_card):
    card = insert_card()
    pinentry = ScriptedPinentry(tmp_path / "pinentry", ["ZZZ999", "cancel"])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = run_example(daemon.bus.address, tmp_path)
    assert result.returncode == 0, result.stderr
    # The dialog asked again after the wrong password; the user cancelled there.
    assert result.stdout.splitlines()[1] == "the user cancelled (操作はキャンセルされました)"
    assert card.profile.sign_tries_left - 1 == card.tries()["sign"]
