"""The README's Python example, run as written against the daemon and the virtual card."""

from __future__ import annotations

import os
import re
import signal
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


def shell_blocks_after(heading: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start)
    section = text[start : end if end >= 0 else None]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_run_the_daemon_by_hand_as_the_readme_says(tmp_path):
    """Both terminals of "Run the daemon by hand on the sandbox", line by line."""
    first, second = shell_blocks_after("### Run the daemon by hand on the sandbox")
    (sandbox_command,) = [line for line in first.splitlines() if line and line[0] != "#"]
    repo = README.parent
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LANG": "C.UTF-8"}
    for name in ("PCSCLITE_CSOCK_NAME", "MNCD_VCARD_CONTROL", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    terminal1 = subprocess.Popen(
        ["bash", "-c", f"exec {sandbox_command}"], cwd=repo, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        exports = []
        for line in terminal1.stdout:  # type: ignore[union-attr]
            if line.startswith("export "):
                exports.append(line.strip())
            if line.startswith("Ctrl-C stops it."):
                break
        assert len(exports) == 2, exports
        # Terminal 2: the pasted exports, then everything after dbus-run-session in its shell.
        lines = second.splitlines()
        start = lines.index("dbus-run-session -- bash")
        assert lines[start - 1].startswith("export PCSCLITE_CSOCK_NAME=…")
        script = tmp_path / "terminal2.sh"
        script.write_text("set -e\n" + "\n".join(lines[start + 1 :]) + "\n", encoding="utf-8")
        result = subprocess.run(
            ["bash", "-c", "; ".join(exports) + f"; dbus-run-session -- bash {script}"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        terminal1.send_signal(signal.SIGINT)
        terminal1.wait(timeout=30)
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.count("State:     card-present") == 2
    assert "verified" in out
    assert "'matches': <false>" in out and "'changed': <['address']>" in out
    assert "'state': <'invalidated'>" in out
    final = out[out.rindex("署名用電子証明書") :]
    assert "invalidated" in final
