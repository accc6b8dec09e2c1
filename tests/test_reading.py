"""What GetStatus says while a card is being read, and a card another program holds at insertion.

A card is card-present only once it has been read; before that the state is reading, and the
certificates shown are what the cache knows of that very card (recognised by its manufacture
number), marked as from the cache, or nothing at all.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from busstack import Daemon, PrivateBus, gdbus_call, gvariant_bytes, status, wait_for
from smartcard import scard
from test_daemon_dbus import wait_state

from mncd.client import MyNumberCard, Status


@pytest.fixture
def bus(tmp_path):
    private = PrivateBus(tmp_path)
    yield private
    private.stop()


@pytest.fixture
def daemon(bus, sandbox, tmp_path):
    process = Daemon(bus, sandbox.env, tmp_path / "state").start()
    yield process
    process.stop()
    assert "Traceback" not in process.log


async def _poll(address: str, interval: float, limit: float) -> list[Status]:
    """GetStatus every ``interval`` seconds until the card has been read."""
    seen: list[Status] = []
    async with await MyNumberCard.connect(address) as client:
        deadline = asyncio.get_running_loop().time() + limit
        while asyncio.get_running_loop().time() < deadline:
            seen.append(await client.get_status())
            if seen[-1].state == "card-present":
                break
            await asyncio.sleep(interval)
    return seen


def poll_during(address: str, insert) -> list[Status]:
    """Every GetStatus answer, polled every 20 ms, from before ``insert()`` until the card has
    been read."""
    result: list[list[Status]] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(_poll(address, 0.02, 60))))
    thread.start()
    time.sleep(0.2)  # a few answers before the card arrives
    insert()
    thread.join(70)
    return result[0]


def test_a_slow_card_is_reading_until_it_was_read_never_present_without_certificates(
    daemon, insert_card
):
    address = daemon.bus.address
    card = None

    def insert():
        nonlocal card
        card = insert_card(name="slow-card", apdu_delay_ms=30)

    seen = poll_during(address, insert)
    assert card is not None
    states = [s.state for s in seen]
    assert "reading" in states, states
    assert states[-1] == "card-present"
    for s in seen:
        if s.state == "card-present":  # card-present means: read, certificates from the card
            assert s.auth.source == "card" and s.auth.present and s.auth.state == "valid"
            assert s.sign.present and s.sign.source == "card"
            assert s.reader == card.reader
        if s.state == "reading":
            assert s.reader == card.reader
            # Never seen before: nothing is known yet, and it is not said to be absent.
            assert s.auth.source == "none" and s.sign.source == "none"
            assert s.card_id == ""
    assert seen[-1].auth.days_left == card.profile.not_after_days


def test_while_a_known_card_is_read_the_cache_shows_that_card_only(daemon, insert_card):
    address = daemon.bus.address
    slow = insert_card(name="known-slow-card", apdu_delay_ms=30)
    first = wait_state(address, "card-present")
    slow.remove()
    other = insert_card(name="another-card", generation=7)  # now the card seen last is another
    second = wait_state(address, "card-present")
    other.remove()
    assert wait_state(address, "no-card")["card_id"] == second["card_id"]

    seen = poll_during(address, slow.reinsert)
    reading = [s for s in seen if s.state == "reading"]
    assert reading, [s.state for s in seen]
    for s in reading:
        # Before the card is recognised nothing is shown; after, this card's cached data.
        assert s.card_id in ("", first["card_id"])
        assert s.auth.fingerprint in ("", first["auth"]["fingerprint"])
        assert s.auth.source in ("none", "cache")
    recognised = [s for s in reading if s.card_id]
    assert recognised, "the card being read was never recognised from the cache"
    assert all(s.auth.source == "cache" and s.auth.state == "valid" for s in recognised)
    assert seen[-1].state == "card-present" and seen[-1].card_id == first["card_id"]
    assert seen[-1].auth.source == "card"


class ExclusiveHold:
    """Another program holding the card in a reader exclusively (as some PKCS#11 modules do)."""

    def __init__(self, reader: str) -> None:
        hresult, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        assert hresult == scard.SCARD_S_SUCCESS
        hresult, self.handle, _protocol = scard.SCardConnect(
            self.context, reader, scard.SCARD_SHARE_EXCLUSIVE,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )  # fmt: skip
        assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)

    def release(self) -> None:
        scard.SCardDisconnect(self.handle, scard.SCARD_LEAVE_CARD)
        scard.SCardReleaseContext(self.context)


def test_a_card_held_by_another_program_at_insertion_is_read_once_released(
    bus, sandbox, tmp_path, insert_card
):
    card = insert_card()
    hold = ExclusiveHold(card.reader)
    daemon = Daemon(bus, sandbox.env, tmp_path / "state")
    released = False
    try:
        daemon.start()  # it finds the card held by another program
        held_since = time.monotonic()
        wait_for(lambda: status(bus.address)["state"] == "reading", "the daemon reading")
        # The daemon waits for the other program, and a caller that needs the card waits too.
        outcome: dict[str, str] = {}
        pin = f"{{'pin': <'{card.profile.auth_pin}'>}}"

        def authenticate() -> None:
            outcome["out"] = gdbus_call(bus.address, "Authenticate", gvariant_bytes(b"hi"), pin)

        caller = threading.Thread(target=authenticate)
        caller.start()
        while time.monotonic() - held_since < 3:  # held for 3 s: never "unknown-card"
            assert status(bus.address)["state"] == "reading"
            time.sleep(0.1)
        hold.release()
        released = True
        # Read within 2 s of the release (the retry backoff is capped at 1 s).
        wait_for(lambda: status(bus.address)["auth"]["source"] == "card", "card read", timeout=2)
        assert status(bus.address)["state"] == "card-present"
        caller.join(30)
        assert "out" in outcome  # the Authenticate waiting for the card went through
        assert card.tries()["auth"] == 3
    finally:
        if not released:
            hold.release()
        daemon.stop()
    assert "another program holds the card" in daemon.log
    assert "Traceback" not in daemon.log


def test_mncctl_status_describes_a_card_being_read_once_it_has_been_read(daemon, insert_card):
    """A person who runs mncctl status right after inserting the card (or starting mncd) gets
    the card read, not "reading the card": status waits a few seconds for the read."""
    from test_mncctl_pin_change import mncctl

    address = daemon.bus.address
    insert_card(name="slow-status-card", apdu_delay_ms=30)
    wait_state(address, "reading")
    shown = mncctl(address, "status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("State:            My Number Card present\n"), shown.stdout
