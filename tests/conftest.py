"""Fixtures for tests against the real stack: an isolated pcscd + vpcd + virtual cards.

One sandbox (pcscd in its own mount and network namespaces) serves the whole test session; each
test inserts the cards it needs and they are removed afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faultstats
import pytest
from smartcard import scard

from mncd.vcard.control import CardControl
from mncd.vcard.profile import CardProfile
from mncd.vcard.sandbox import PcscSandbox

READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sandbox() -> Iterator[PcscSandbox]:
    box = PcscSandbox().start()
    # libpcsclite reads this when the process first talks to pcscd.
    os.environ.update(box.env)
    try:
        yield box
    finally:
        box.stop()


def wait_for_card(reader: str, present: bool, timeout: float = 10.0) -> None:
    """Block until pcscd reports a card (or no card) in ``reader``."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
    try:
        deadline = time.monotonic() + timeout
        state = scard.SCARD_STATE_UNAWARE
        while time.monotonic() < deadline:
            hresult, states = scard.SCardGetStatusChange(context, 200, [(reader, state)])
            if hresult == scard.SCARD_S_SUCCESS:
                state = states[0][1]
                has_card = bool(state & scard.SCARD_STATE_PRESENT)
                if has_card == present and not state & scard.SCARD_STATE_MUTE:
                    return
                state &= ~scard.SCARD_STATE_CHANGED
            elif hresult != scard.SCARD_E_TIMEOUT:
                time.sleep(0.05)
        raise TimeoutError(f"card {'not inserted' if present else 'not removed'} in {reader}")
    finally:
        scard.SCardReleaseContext(context)


@dataclass
class InsertedCard:
    """A virtual card inserted for one test."""

    control: CardControl
    name: str
    slot: int
    profile: CardProfile

    @property
    def reader(self) -> str:
        return READERS[self.slot]

    def commands(self, clear: bool = False) -> list[str]:
        return self.control.commands(self.name, clear)

    def tries(self) -> dict[str, int]:
        return self.control.tries(self.name)

    def certificates(self) -> dict[str, bytes]:
        return self.control.certificates(self.name)

    def remove(self) -> None:
        self.control.remove(self.slot)
        wait_for_card(self.reader, present=False)

    def reinsert(self) -> None:
        self.control.insert(slot=self.slot, card=self.name)
        wait_for_card(self.reader, present=True)


@pytest.fixture
def insert_card(sandbox: PcscSandbox) -> Iterator:
    """Factory: ``insert_card(slot=0, name=..., **profile_settings)`` → :class:`InsertedCard`."""
    control = sandbox.control
    used: set[int] = set()

    def insert(slot: int = 0, name: str | None = None, **settings: object) -> InsertedCard:
        profile = CardProfile.from_dict({**CardProfile().to_dict(), **settings})
        card_name = name or f"card-{time.monotonic_ns()}"
        control.insert(profile, slot=slot, card=card_name)
        used.add(slot)
        wait_for_card(READERS[slot], present=True)
        return InsertedCard(control, card_name, slot, profile)

    yield insert
    for slot in used:
        if control.remove(slot):
            wait_for_card(READERS[slot], present=False)


@pytest.fixture
def card(insert_card) -> InsertedCard:
    """A healthy default card in the first reader."""
    return insert_card()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line of the fault suite's figures (faults, bad inputs, load, fuzzing)."""
    line = faultstats.summary_line()
    if line:
        terminalreporter.write_line(line)


@pytest.fixture
def daemon(tmp_path, sandbox):
    """mncd on a private bus of the test's own, over the session's PC/SC sandbox; its log shows
    no traceback. (Tests that need another daemon define their own.)"""
    from busstack import daemon_on_private_bus

    with daemon_on_private_bus(tmp_path, sandbox.env) as process:
        yield process
    assert "Traceback" not in process.log


@pytest.fixture
def terminals():
    """Factory of mncctl terminals (tmux), all closed afterwards."""
    from test_mncctl_pin import run_in_terminal

    opened = []

    def open_terminal(address: str, *args: str, desktop: bool = False, **extra: str):
        opened.append(run_in_terminal(address, *args, desktop=desktop, **extra))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


@pytest.fixture
def desktop(tmp_path):
    """A private session bus with a real notification server (dunst under Xvfb) on it."""
    from busstack import PrivateBus
    from notifyserver import NotifyServer

    bus = PrivateBus(tmp_path)
    server = NotifyServer(tmp_path, bus.address).start()
    yield bus, server
    server.stop()
    bus.stop()
