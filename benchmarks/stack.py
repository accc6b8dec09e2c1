"""The real stack for the benchmark: isolated pcscd + vpcd + virtual cards, private bus, mncd.

Everything is the project's own machinery (:mod:`mncd.vcard`); the daemon runs as
``python -m mncd.daemon`` exactly as a user's session would start it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_next import Message, MessageType

from mncd.api import BUS_NAME
from mncd.client import Event, MyNumberCard, Status
from mncd.vcard.profile import CardProfile
from mncd.vcard.sandbox import PcscSandbox
from mncd.vcard.sessionbus import PrivateSessionBus

READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")


@dataclass(frozen=True)
class CardSpeed:
    """A virtual card's speed: extra time per APDU and per signature."""

    name: str
    apdu_delay_ms: float
    sign_delay_ms: float
    atr: str = "contact-1"
    note: str = ""

    def profile(self) -> CardProfile:
        base = CardProfile()
        return CardProfile.from_dict(
            {
                **base.to_dict(),
                "apdu_delay_ms": self.apdu_delay_ms,
                "sign_delay_ms": self.sign_delay_ms,
                "atr": self.atr,
            }
        )


SPEEDS = {
    "fast": CardSpeed("fast", 0.0, 0.0, note="no delay: software overhead only"),
    "contact": CardSpeed("contact", 30.0, 400.0, note="a real card in a contact reader"),
    "contactless": CardSpeed(
        "contactless", 50.0, 600.0, atr="contactless-1", note="a real card on an NFC reader"
    ),
}


async def connect(address: str) -> MyNumberCard:
    """A new client connection (:mod:`mncd.client`) to the bus at ``address``."""
    return await MyNumberCard.connect(address)


class NameWatch:
    """Records when names get an owner on a bus (``NameOwnerChanged``), race-free.

    Any name (the startup baseline's too), so not :meth:`MyNumberCard.subscribe`, which reports
    mncd's name only: the signals are read straight off the client's connection.
    """

    def __init__(self, client: MyNumberCard) -> None:
        self.client = client
        self.owned: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}
        client.bus.add_message_handler(self._on_message)

    async def start(self) -> NameWatch:
        rule = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"
        await self.client.call_bus("AddMatch", "s", [rule])
        return self

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "NameOwnerChanged":
            name, _old, new = msg.body
            if new:
                self.owned[name] = time.perf_counter()
                self._events.setdefault(name, asyncio.Event()).set()
            else:
                self.forget(name)

    def forget(self, name: str) -> None:
        """Treat ``name`` as unowned until its next NameOwnerChanged."""
        self.owned.pop(name, None)
        if name in self._events:
            self._events[name].clear()

    async def wait(self, name: str, timeout: float = 30.0) -> float:
        """perf_counter() time at which ``name`` got an owner."""
        event = self._events.setdefault(name, asyncio.Event())
        if name not in self.owned:
            has_owner = await self.client.call_bus("NameHasOwner", "s", [name])
            if has_owner and name not in self.owned:
                self.owned[name] = time.perf_counter()
                event.set()
        await asyncio.wait_for(event.wait(), timeout)
        return self.owned[name]


class SignalWatch:
    """Records arrival times of one of the daemon's signals (:meth:`MyNumberCard.subscribe`)."""

    def __init__(self, client: MyNumberCard, member: str) -> None:
        self.client = client
        self.member = member
        self.times: list[tuple[float, Any]] = []
        self._event = asyncio.Event()

    async def start(self) -> SignalWatch:
        await self.client.subscribe(self._on_event)
        return self

    def _on_event(self, event: Event) -> None:
        if event.name == self.member:
            self.times.append((time.perf_counter(), event.args))
            self._event.set()

    @property
    def count(self) -> int:
        """Signals received so far."""
        return len(self.times)

    async def after(self, count: int, timeout: float = 30.0) -> float:
        """Wait for a signal beyond the first ``count``; the arrival time of the next one."""
        while len(self.times) <= count:
            self._event.clear()
            await asyncio.wait_for(self._event.wait(), timeout)
        return self.times[count][0]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS from /proc/<pid>/status), KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Daemon:
    """``python -m mncd.daemon`` on a bus, with its own state directory."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "mncd") -> None:
        self.env = env
        self.state_dir = workdir / f"{name}-state"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start the process (without waiting for it to be ready)."""
        env = {**self.env, "XDG_STATE_HOME": str(self.state_dir), **(extra_env or {})}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mncd.daemon"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Stack:
    """Sandbox (pcscd + vpcd + card host), a private session bus, mncd on it, a client bus."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.sandbox = PcscSandbox(workdir / "pcsc")
        self.session: PrivateSessionBus | None = None
        self.daemon: Daemon | None = None
        self.client: MyNumberCard | None = None
        self.names: NameWatch | None = None
        self.inserted: dict[int, str] = {}
        self._known_cards: set[str] = set()

    @property
    def address(self) -> str:
        assert self.session is not None
        return self.session.address

    def child_env(self, address: str | None = None) -> dict[str, str]:
        """Environment for the daemon and the clients: this sandbox, this bus, private dirs."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update(self.sandbox.env)
        env.update(
            DBUS_SESSION_BUS_ADDRESS=address or self.address,
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_CACHE_HOME=str(self.dir / "cache"),
            XDG_RUNTIME_DIR=str(self.runtime),
            P11_KIT_SERVER_ADDRESS=f"unix:path={self.runtime / 'mncd' / 'pkcs11'}",
        )
        return env

    @property
    def runtime(self) -> Path:
        """The session's runtime directory: mncd serves PKCS#11 in it."""
        path = self.dir / "runtime"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    async def start(self) -> None:
        (self.dir / "pcsc").mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sandbox.start)
        # libpcsclite reads this when this process first talks to pcscd (the raw baselines).
        os.environ.update(self.sandbox.env)
        bus_dir = self.dir / "bus"
        bus_dir.mkdir()
        self.session = PrivateSessionBus(bus_dir)
        self.client = await connect(self.address)
        self.names = await NameWatch(self.client).start()
        self.daemon = Daemon(self.child_env(), self.dir)

    async def start_daemon(self) -> float:
        """Start mncd and wait until it owns its name; seconds it took."""
        assert self.daemon is not None and self.names is not None
        self.names.forget(BUS_NAME)
        start = time.perf_counter()
        self.daemon.spawn()
        return await self.names.wait(BUS_NAME) - start

    async def unique_name(self) -> str:
        assert self.client is not None
        return str(await self.client.call_bus("GetNameOwner", "s", [BUS_NAME]))

    async def insert(self, speed: CardSpeed, slot: int = 0) -> None:
        """Insert the card of ``speed`` (the same card, PIN counters kept, on later calls).

        The card's APDU log is cleared first, so it holds what this insertion caused.
        """
        name = f"bench-{speed.name}"
        loop = asyncio.get_running_loop()
        control = self.sandbox.control
        if name in self._known_cards:
            await loop.run_in_executor(None, control.log, name, True)
            profile = None
        else:
            profile = speed.profile()
        await loop.run_in_executor(None, lambda: control.insert(profile, slot=slot, card=name))
        self._known_cards.add(name)
        self.inserted[slot] = name

    async def remove(self, slot: int = 0) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.sandbox.control.remove, slot)
        self.inserted.pop(slot, None)

    async def card_commands(self, name: str, clear: bool = False) -> list[str]:
        """APDUs the card called ``name`` answered (its log), optionally clearing it."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.sandbox.control.commands, name, clear)

    async def wait_card_read(self, timeout: float = 30.0) -> Status:
        """Wait until the daemon has read the card (auth certificate from the card)."""
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            status = await self.client.get_status()
            if status.state == "card-present" and status.auth.source == "card":
                return status
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon did not read the card")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.daemon is not None:
            self.daemon.stop()
        if self.session is not None:
            self.session.stop()
        self.sandbox.stop()
