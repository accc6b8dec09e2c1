"""A private dbus-daemon per test, the mncd daemon on it, and third-party clients calling it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mncd.vcard.sessionbus import PrivateSessionBus

BUS_NAME = "io.github.mncd.MyNumberCard1"
OBJECT_PATH = "/io/github/mncd/MyNumberCard1"
INTERFACE = BUS_NAME

PrivateBus = PrivateSessionBus


class Daemon:
    """The mncd daemon as a child process on a private bus."""

    def __init__(self, bus: PrivateBus, env: dict[str, str], state_dir: Path) -> None:
        self.bus = bus
        self.log_path = bus.dir / "mncd.log"
        self.env = {**os.environ, **env, "DBUS_SESSION_BUS_ADDRESS": bus.address}
        self.env.pop("NOTIFY_SOCKET", None)
        self.state_dir = state_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self, extra_env: dict[str, str] | None = None, wrapper: list[str] | None = None
    ) -> Daemon:
        """Start mncd (``wrapper``: a command prefix such as ``umockdev-wrapper``)."""
        env = {**self.env, **(extra_env or {}), "XDG_STATE_HOME": str(self.state_dir)}
        self.process = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "mncd.daemon", "--verbose"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("ab"),
        )
        try:
            wait_for(lambda: name_has_owner(self.bus.address), "mncd owning its bus name")
        except TimeoutError:
            self.stop()  # never leave a daemon behind
            raise TimeoutError(f"mncd did not start; its log:\n{self.log}") from None
        return self

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
        return process.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def daemon_on_private_bus(
    directory: Path, env: dict[str, str], limits: dict[str, int] | None = None
) -> Iterator[Daemon]:
    """A private bus in ``directory`` (with dbus-daemon ``limits``) with mncd running on it; both
    stopped afterwards."""
    bus = PrivateBus(directory, limits=limits)
    try:
        daemon = Daemon(bus, env, directory / "state").start()
        try:
            yield daemon
        finally:
            daemon.stop()
    finally:
        bus.stop()


def wait_for(predicate: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def name_has_owner(address: str, name: str = BUS_NAME) -> bool:
    result = subprocess.run(
        ["busctl", f"--address={address}", "--json=short", "call", "org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", name],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return result.returncode == 0 and json.loads(result.stdout)["data"] == [True]


def owner_pid(address: str) -> int | None:
    """The pid of the process owning mncd's name, if any."""
    result = subprocess.run(
        ["busctl", f"--address={address}", "--json=short", "call", "org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s",
         BUS_NAME],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return json.loads(result.stdout)["data"][0] if result.returncode == 0 else None


class CallError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def busctl(address: str, method: str, signature: str = "", *args: str, timeout: int = 60) -> Any:
    """Call a method with systemd's busctl; return the decoded JSON data or raise CallError."""
    cmd = ["busctl", f"--address={address}", "--json=short", f"--timeout={timeout}", "call",
           BUS_NAME, OBJECT_PATH, INTERFACE, method]  # fmt: skip
    if signature:
        cmd += [signature, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    if result.returncode != 0:
        text = result.stderr.strip()
        raise CallError(text.split(":")[0] if text else "unknown", text)
    return json.loads(result.stdout)["data"]


def unwrap(value: Any) -> Any:
    """busctl's JSON for variants ({"type":..,"data":..}) to plain values."""
    if isinstance(value, dict) and set(value) == {"type", "data"}:
        return unwrap(value["data"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def status(address: str) -> dict[str, Any]:
    return unwrap(busctl(address, "GetStatus")[0])


def gdbus(address: str, method: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """Call a method with GLib's gdbus (arguments in GVariant text form)."""
    return subprocess.run(
        ["gdbus", "call", "--address", address, "--dest", BUS_NAME, "--object-path",
         OBJECT_PATH, "--timeout", str(timeout), "--method", f"{INTERFACE}.{method}", *args],
        capture_output=True, text=True, timeout=timeout + 10,
    )  # fmt: skip


def gdbus_call(address: str, method: str, *args: str, timeout: int = 60) -> str:
    """Call with gdbus; return its output or raise CallError with the D-Bus error name."""
    result = gdbus(address, method, *args, timeout=timeout)
    if result.returncode != 0:
        match = re.search(r"GDBus\.Error:([\w.]+): (.*)", result.stderr, re.S)
        if not match:
            raise CallError("unknown", result.stderr.strip())
        raise CallError(match.group(1), f"{match.group(1)}: {match.group(2).strip()}")
    return result.stdout


def gvariant_bytes(data: bytes) -> str:
    return "[" + ", ".join(f"byte 0x{b:02x}" for b in data) + "]" if data else "@ay []"


_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}


def _bytestring(body: str) -> bytes:
    """gdbus's ``b'…'`` form of an ``ay`` that ends in a NUL byte (GLib escapes; the final NUL
    is implied)."""
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :]).group(0)  # type: ignore[union-attr]
            out.append(int(digits, 8))
            i += 1 + len(digits)
        elif nxt == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(_ESCAPES.get(nxt, ord(nxt)))
            i += 2
    return bytes(out) + b"\0"


def parse_gvariant_arrays(text: str) -> list[bytes]:
    """Decode every ``ay`` gdbus printed, as ``[byte 0x.., ...]`` or, when it ends in a NUL
    byte, as a ``b'…'`` bytestring, in order."""
    found = re.finditer(r"\[(byte [^\]]*)\]|b'((?:[^'\\]|\\.)*)'|b\"((?:[^\"\\]|\\.)*)\"", text)
    arrays = []
    for match in found:
        if match.group(1) is not None:
            arrays.append(bytes(int(tok.split()[-1], 16) for tok in match.group(1).split(",")))
        else:
            arrays.append(
                _bytestring(match.group(2) if match.group(2) is not None else match.group(3))
            )
    return arrays
