"""The browser bridge's test stack: the daemon on a private bus with a scripted pinentry whose
answers each test sets, and mncd-browser-host run as the browser runs it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from pinentry_script import ScriptedPinentry, config_with

from mncd.browser import identity

HOST = Path(sys.executable).with_name("mncd-browser-host")
#: The combination code's prefix, as the facts give it (not taken from mncd's own code).
COMBINATION_PREFIX = bytes.fromhex("2e71f6620bc654ced494e5ec34fe03c8")
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def digest_info(data: bytes) -> bytes:
    return SHA256_PREFIX + hashlib.sha256(data).digest()


def combination_code(manufacture_number: str, uuid: str) -> str:
    return hashlib.sha256(
        COMBINATION_PREFIX + manufacture_number.encode() + bytes.fromhex(uuid)
    ).hexdigest()


def frame(message: Any) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack("<I", len(body)) + body


def unframe(data: bytes) -> list[Any]:
    messages = []
    while data:
        (length,) = struct.unpack("<I", data[:4])
        messages.append(json.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return messages


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class Pinentry(ScriptedPinentry):
    """A scripted pinentry whose answers are set anew for each test."""

    def answer(self, answers: list[object]) -> None:
        self.script.write_text(json.dumps(answers))
        Path(str(self.script) + ".used").unlink(missing_ok=True)
        self.log_path.write_text("")


def daemon_env(directory: Path, sandbox_env: dict[str, str]) -> tuple[Pinentry, dict[str, str]]:
    entry = Pinentry(directory / "pinentry", [])
    env = {**sandbox_env, **config_with(directory, entry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    return entry, env


def run_host(
    address: str,
    payload: bytes,
    argv: list[str] | None = None,
    timeout: float = 60,
) -> tuple[list[Any], int]:
    """Run the host as Chromium does (the extension's origin as argument), feed it ``payload``
    (framed messages) and return its answers and exit status."""
    args = [identity.chromium_origin()] if argv is None else argv
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
    result = subprocess.run(
        [str(HOST), *args], input=payload, capture_output=True, timeout=timeout, env=env
    )
    # The host writes nothing of its own (the browser keeps a host's stderr in its log).
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    return unframe(result.stdout), result.returncode


def ask(address: str, message: Any, **kwargs: Any) -> dict[str, Any]:
    """One request to the host; its one answer."""
    answers, _ = run_host(address, frame(message), **kwargs)
    assert len(answers) == 1, answers
    return answers[0]
