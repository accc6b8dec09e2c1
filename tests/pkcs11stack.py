"""The daemon serving PKCS#11 on a private runtime directory, and PKCS#11 applications calling it
through Debian's p11-kit-client.so: pkcs11-tool, p11tool, and a ctypes application."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busstack import Daemon, PrivateBus, wait_for
from pinentry_script import ScriptedPinentry, config_with

CLIENT = Path(__file__).with_name("pkcs11_client.py")
AUTH_SLOT, SIGN_SLOT = 0, 1
AUTH_TOKEN = "JPKI (User Authentication PIN)"
SIGN_TOKEN = "JPKI (Digital Signature PIN)"


def p11_kit_module(name: str = "p11-kit-client.so") -> str:
    """A module of Debian's p11-kit-modules (p11-kit-client.so) or p11-kit (p11-kit-proxy.so)."""
    found = sorted(glob.glob(f"/usr/lib/*/pkcs11/{name}") + glob.glob(f"/usr/lib/*/{name}"))
    assert found, f"{name} is missing (Debian packages p11-kit, p11-kit-modules)"
    return found[0]


@dataclass
class Pkcs11Daemon:
    """mncd on a private bus, serving PKCS#11 in ``runtime``."""

    daemon: Daemon
    runtime: Path
    pinentry: ScriptedPinentry

    @property
    def socket(self) -> Path:
        return self.runtime / "mncd" / "pkcs11"

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    def env(self) -> dict[str, str]:
        """The environment of an application using p11-kit-client.so."""
        return {**os.environ, "P11_KIT_SERVER_ADDRESS": self.address}

    def tool(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        """``pkcs11-tool --module p11-kit-client.so ARGS``."""
        return subprocess.run(
            ["pkcs11-tool", "--module", p11_kit_module(), *args],
            capture_output=True, text=True, timeout=timeout, env=self.env(),
        )  # fmt: skip

    def application(self, steps: list[list[Any]], timeout: int = 120) -> dict[str, Any]:
        """Run the ctypes application with ``steps``; its JSON answer."""
        done = subprocess.run(
            [sys.executable, str(CLIENT), json.dumps({"module": p11_kit_module(), "steps": steps})],
            capture_output=True, text=True, timeout=timeout, env=self.env(),
        )  # fmt: skip
        assert done.stdout, done.stderr
        return json.loads(done.stdout)

    def start_application(self, steps: list[list[Any]]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(CLIENT), json.dumps({"module": p11_kit_module(), "steps": steps})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.env(),
        )  # fmt: skip


@contextmanager
def pkcs11_daemon(
    directory: Path,
    sandbox_env: dict[str, str],
    answers: list[object] | None = None,
    display: str = ":0",
) -> Iterator[Pkcs11Daemon]:
    """mncd with a runtime directory (so it serves PKCS#11) and a scripted pinentry;
    ``display``: its DISPLAY ("": none, nor a Wayland display or terminal)."""
    runtime = directory / "runtime"
    runtime.mkdir(mode=0o700, parents=True)
    entry = ScriptedPinentry(directory / "pinentry", answers or [])
    env = {
        **sandbox_env,
        **config_with(directory, entry),
        "XDG_RUNTIME_DIR": str(runtime),
        "LANG": "C.UTF-8",
        "DISPLAY": display,
    }
    if not display:
        env.update({"WAYLAND_DISPLAY": "", "GPG_TTY": ""})
    bus = PrivateBus(directory)
    try:
        daemon = Daemon(bus, env, directory / "state").start()
        try:
            served = Pkcs11Daemon(daemon, runtime, entry)
            wait_for(served.socket.exists, "the PKCS#11 socket")
            yield served
        finally:
            daemon.stop()
        assert "Traceback" not in daemon.log, daemon.log
    finally:
        bus.stop()


def wait_for_token(served: Pkcs11Daemon, slot: int = AUTH_SLOT) -> None:
    """Until the card has been read and its token is present."""

    def present() -> bool:
        listing = served.tool("--list-token-slots")
        return listing.returncode == 0 and f"Slot {slot} " in listing.stdout

    wait_for(present, f"a token in slot {slot}")
