"""Faults through the real stack: the card pulled at every step, pcscd killed, the session bus
gone, SIGTERM mid-operation. After each: a typed error, the daemon still serving with the right
state, the cache whole, no PIN sent twice, and the next insertion working."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import faultstats
import pytest
from busstack import CallError, status, wait_for
from conftest import wait_for_card
from faultkit import (
    AUTHENTICATE_APDUS,
    ERR,
    READ_BINARY,
    SECRET_CARD,
    SELECT_JPKI,
    SIGN,
    VERIFY,
    Stack,
    authenticate,
    check_cache,
    dbus_properties,
    operations,
    select_ef,
    sign,
    verifies_with_pin,
)

from mncd.card.errors import CardTimeoutError, PcscUnavailableError
from mncd.core.cache import CardCache
from mncd.core.manager import CardManager
from mncd.daemon.main import BUS_LOST

AUTH_PIN = SECRET_CARD["auth_pin"]
PASSWORD = SECRET_CARD["sign_password"]
VERIFY_AUTH = f"{VERIFY}{len(AUTH_PIN):02X}"
VERIFY_SIGN = f"{VERIFY}{len(PASSWORD):02X}"


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory):
    """One daemon for the whole module: it must keep serving through every fault."""
    running = Stack(tmp_path_factory.mktemp("faults"), sandbox.env).start()
    yield running
    log = running.daemon.log
    running.close()
    assert "Traceback" not in log


def start_call(fn, *args) -> tuple[threading.Thread, dict]:
    """Run a blocking call in a thread; its result or CallError lands in the returned dict."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = fn(*args)
        except CallError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def assert_no_card(stack: Stack) -> None:
    """State, properties and status all say: no card, answered from the cache."""
    s = stack.wait_state("no-card")
    assert s["auth"]["source"] == "cache" and s["reader"] == ""
    props = dbus_properties(stack.address)
    assert props["State"] == "no-card" and props["CardPresent"] is False


def reinsert_and_authenticate(stack: Stack, card) -> None:
    """The next insertion is read without any PIN, and Authenticate works with one VERIFY."""
    card.commands(clear=True)
    card.reinsert()
    stack.wait_state("card-present")
    assert verifies_with_pin(card.commands(clear=True)) == 0  # no PIN without a caller
    authenticate(stack.address, AUTH_PIN)
    assert operations(card.commands()) == [AUTHENTICATE_APDUS]


#: The live counter's read: an empty VERIFY (see faultkit.kind).
COUNTER = "VERIFY-EMPTY"
AUTH_PIN_CHECK = (SELECT_JPKI, select_ef(0x0018), COUNTER)
SIGN_PIN_CHECK = (SELECT_JPKI, select_ef(0x001B), COUNTER)

# What the card has answered before the pull, as kinds, for each step.
PULLS = {
    "auth-after-select": ("auth", select_ef(0x0018), [SELECT_JPKI]),
    "auth-at-counter": ("auth", f"{VERIFY}", [SELECT_JPKI, select_ef(0x0018)]),
    "auth-at-verify": ("auth", VERIFY_AUTH, [SELECT_JPKI, select_ef(0x0018), COUNTER]),
    "auth-after-verify": ("auth", select_ef(0x0017), [*AUTH_PIN_CHECK, VERIFY]),
    "auth-during-sign": ("auth", SIGN, [*AUTH_PIN_CHECK, VERIFY, select_ef(0x17)]),
    "sign-after-select": ("sign", select_ef(0x001B), [SELECT_JPKI]),
    "sign-at-verify": ("sign", VERIFY_SIGN, [SELECT_JPKI, select_ef(0x001B), COUNTER]),
    "sign-after-verify": ("sign", select_ef(0x0001), [*SIGN_PIN_CHECK, VERIFY]),
    "sign-during-certificate-read": (
        "sign", f"{READ_BINARY}0100", [*SIGN_PIN_CHECK, VERIFY, select_ef(0x1), "*"],
    ),
    "sign-during-sign": (
        "sign", SIGN, [*SIGN_PIN_CHECK, VERIFY, select_ef(1), "*", select_ef(0x1A)],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("method", "prefix", "before"), PULLS.values(), ids=PULLS.keys())
def test_card_pulled_mid_operation(stack, insert_card, method, prefix, before):
    card = insert_card(**SECRET_CARD)
    stack.wait_state("card-present")
    tries = card.tries()
    cached = check_cache(stack.cache_dir)
    card.commands(clear=True)
    card.control.pull_on(prefix, slot=card.slot)
    with pytest.raises(CallError) as err:
        if method == "auth":
            authenticate(stack.address, AUTH_PIN)
        else:
            sign(stack.address, PASSWORD)
    assert err.value.name == ERR + "CardRemoved", err.value.message
    sent = card.commands(clear=True)
    # The card saw exactly the steps before the pull (reads collapse to "*"), never a VERIFY
    # again, and its counters are what they were: no try spent on a pulled card.
    kinds = [c if not c.startswith(READ_BINARY) else "*" for c in operations(sent)[0]]
    collapsed = [k for i, k in enumerate(kinds) if k != "*" or (i and kinds[i - 1] != "*")]
    assert collapsed == before
    assert verifies_with_pin(sent) == (VERIFY in before)
    assert card.tries() == tries
    assert_no_card(stack)
    assert check_cache(stack.cache_dir) == cached  # nothing half-written, nothing lost
    reinsert_and_authenticate(stack, card)
    faultstats.fault()


def test_card_pulled_while_read_on_insertion(stack, insert_card):
    card = insert_card(**SECRET_CARD)
    stack.wait_state("card-present")
    card.remove()
    stack.wait_state("no-card")
    # In again, and out during the first certificate's body (after the token info).
    card.commands(clear=True)
    card.control.insert(slot=card.slot, card=card.name, pull_on=f"{READ_BINARY}0100")
    wait_for(lambda: card.control.call("state", card=card.name)["slot"] is None, "the pull")
    wait_for_card(card.reader, present=False)
    assert verifies_with_pin(card.commands()) == 0
    assert_no_card(stack)
    check_cache(stack.cache_dir)
    reinsert_and_authenticate(stack, card)
    faultstats.fault()


def test_pcscd_killed_while_idle(stack, sandbox, insert_card):
    card = insert_card(**SECRET_CARD)
    stack.wait_state("card-present")
    pid = stack.daemon.process.pid
    sandbox.pcscd("kill")
    try:
        stack.wait_state("pcsc-unavailable")
        assert dbus_properties(stack.address)["State"] == "pcsc-unavailable"
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            authenticate(stack.address, AUTH_PIN)
        assert err.value.name == ERR + "PcscUnavailable"
    finally:
        sandbox.pcscd("start")
    assert card.commands() == []
    stack.wait_state("no-card")  # a new pcscd: the reader is back, the card must be re-seated
    reinsert_and_authenticate(stack, card)
    assert stack.daemon.process.pid == pid and stack.daemon.process.poll() is None
    faultstats.fault()


def test_pcscd_killed_during_an_operation(stack, sandbox, insert_card):
    card = insert_card(**SECRET_CARD, sign_delay_ms=1500)
    stack.wait_state("card-present")
    card.commands(clear=True)
    thread, outcome = start_call(authenticate, stack.address, AUTH_PIN)
    wait_for(lambda: any(c == select_ef(0x17) for c in card.commands()), "SIGN under way")
    sandbox.pcscd("kill")
    try:
        thread.join(30)
        assert not thread.is_alive()
        error = outcome["error"]
        assert error.name in (ERR + "PcscUnavailable", ERR + "CardRemoved"), error.message
        stack.wait_state("pcsc-unavailable")
    finally:
        sandbox.pcscd("start")
    stack.wait_state("no-card")
    assert verifies_with_pin(card.commands()) == 1  # the PIN went to the card once
    reinsert_and_authenticate(stack, card)
    faultstats.fault()


def test_pcscd_absent_at_start(sandbox, insert_card, tmp_path):
    sandbox.pcscd("stop")
    stack = Stack(tmp_path, sandbox.env)
    try:
        stack.start()
        s = stack.wait_state("pcsc-unavailable")
        assert s["readers"] == []
        sandbox.pcscd("start")
        stack.wait_state("no-card")
        card = insert_card(**SECRET_CARD)
        stack.wait_state("card-present")
        authenticate(stack.address, AUTH_PIN)
        assert stack.daemon.process.poll() is None
    finally:
        sandbox.pcscd("start")
        log = stack.daemon.log
        stack.close()
    assert card.tries()["auth"] == 3 and "Traceback" not in log
    faultstats.fault()


def test_pcscd_gone_and_back_retries_nothing(monkeypatch):
    """In-process: a stale context is replaced before an operation; a failure during one is
    reported, not retried (it may already have sent the PIN)."""

    class Context:
        made = 0

        def __init__(self) -> None:
            Context.made += 1
            self.stale = Context.made == 1

        def list_readers(self) -> list[str]:
            if self.stale:
                raise PcscUnavailableError("stale context")
            return ["reader"]

        def release(self) -> None:
            pass

    monkeypatch.setattr("mncd.core.cardthread.PcscContext", Context)
    manager = CardManager(CardCache(Path("/nonexistent")))
    calls: list[Context] = []

    def operation(context: Context, fail: bool) -> str:
        calls.append(context)
        if fail:
            raise PcscUnavailableError("pcscd died after VERIFY")
        return "done"

    async def run() -> None:
        assert await manager.run_card(operation, False) == "done"
        assert len(calls) == 1 and not calls[0].stale  # the stale context never reached it
        with pytest.raises(PcscUnavailableError):
            await manager.run_card(operation, True)
        assert len(calls) == 2  # once, not twice

    asyncio.run(run())
    manager.close()


def slow_stack(sandbox, insert_card, tmp_path: Path, **settings) -> tuple[Stack, object]:
    stack = Stack(tmp_path, sandbox.env).start()
    card = insert_card(**SECRET_CARD, **settings)
    stack.wait_state("card-present")
    return stack, card


def test_session_bus_gone_while_idle(sandbox, insert_card, tmp_path):
    stack, _card = slow_stack(sandbox, insert_card, tmp_path)
    process = stack.daemon.process
    try:
        stack.bus.process.kill()
        assert process.wait(timeout=20) == BUS_LOST != 0  # systemd restarts it
    finally:
        stack.close()
    log = stack.daemon.log
    assert "lost the session bus" in log and "Traceback" not in log
    check_cache(stack.cache_dir)
    faultstats.fault()


def test_session_bus_gone_during_an_operation(sandbox, insert_card, tmp_path):
    stack, card = slow_stack(sandbox, insert_card, tmp_path, sign_delay_ms=1500)
    process = stack.daemon.process
    try:
        card.commands(clear=True)
        start_call(sign, stack.address, PASSWORD)
        wait_for(lambda: any(c.startswith(SIGN) for c in card.commands()) or any(
            c == select_ef(0x1A) for c in card.commands()), "SIGN under way")  # fmt: skip
        stack.bus.process.kill()
        assert process.wait(timeout=20) == BUS_LOST != 0  # systemd restarts it
    finally:
        stack.close()
    log = stack.daemon.log
    assert "lost the session bus" in log and "Traceback" not in log
    check_cache(stack.cache_dir)
    assert verifies_with_pin(card.commands()) == 1
    faultstats.fault()


def test_sigterm_during_an_operation_keeps_the_cache(sandbox, insert_card, tmp_path):
    stack, card = slow_stack(sandbox, insert_card, tmp_path, sign_delay_ms=2000)
    before = {p: p.read_bytes() for p in stack.cache_dir.glob("*.json")}
    process = stack.daemon.process
    try:
        card.commands(clear=True)
        thread, outcome = start_call(sign, stack.address, PASSWORD)
        wait_for(lambda: any(c == select_ef(0x1A) for c in card.commands()), "SIGN under way")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        elapsed = time.monotonic() - started
        thread.join(10)
        assert "result" not in outcome  # no signature handed out by a daemon on its way out
    finally:
        stack.daemon.process = None
        stack.close()
    log = stack.daemon.log
    assert "Traceback" not in log and elapsed < 15
    assert check_cache(stack.cache_dir) == sorted(p.name for p in before)
    for path, data in before.items():
        assert path.read_bytes() == data or CardCache(path.parent.parent).load(path.stem)
    # The card's verified state did not outlive the operation, and the next daemon starts
    # from the cache as it was.
    assert verifies_with_pin(card.commands()) == 1
    restarted = Stack(tmp_path / "again", sandbox.env, stack.daemon.state_dir)
    try:
        restarted.start()
        restarted.wait_state("card-present")
        sign(restarted.address, PASSWORD)
    finally:
        restarted.close()
    faultstats.fault()


def test_exit_codes_are_documented(repo_root):
    """A clean exit (SIGTERM) is 0, the loss of the bus 1; docs/security.md says so."""
    text = (repo_root / "docs" / "security.md").read_text()
    assert "exit code 0" in text and f"exit code {BUS_LOST}" in text
    unit = (repo_root / "systemd" / "mncd.service").read_text()
    assert "Restart=on-failure" in unit  # non-zero (crash, lost bus): restarted


def test_card_that_never_answers(sandbox, insert_card, tmp_path):
    """A card (or reader) that stops answering: callers get a typed error after the card
    timeout, GetStatus keeps answering, and SIGTERM still ends the daemon."""
    stack = Stack(tmp_path, sandbox.env).start(extra_env={"MNCD_CARD_TIMEOUT": "2"})
    try:
        card = insert_card(**SECRET_CARD, sign_delay_ms=600_000)  # SIGN never answered
        stack.wait_state("card-present")
        for _ in range(2):  # the second waits behind the stuck one: it times out as well
            started = time.monotonic()
            with pytest.raises(CallError) as err:
                authenticate(stack.address, AUTH_PIN)
            assert err.value.name == ERR + "Failed" and "did not answer" in err.value.message
            assert 1.5 < time.monotonic() - started < 15
            assert status(stack.address)["state"] == "card-present"
        assert verifies_with_pin(card.commands()) == 1  # the queued call never got to VERIFY
        process = stack.daemon.process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stack.close()
    log = stack.daemon.log
    assert "still blocked in the reader" in log and "Traceback" not in log
    check_cache(stack.cache_dir)
    faultstats.fault()


def test_timed_out_operations_never_run_later(monkeypatch):
    """In-process: an operation that timed out while queued behind a stuck one is dropped, so a
    PIN its caller was told failed is never sent afterwards."""
    manager = CardManager(CardCache(Path("/nonexistent")), timeout=0.2)
    release = threading.Event()
    ran: list[str] = []

    class Context:
        def list_readers(self) -> list[str]:
            return ["reader"]

        def release(self) -> None:
            pass

    def operation(_context: Context, name: str) -> str:
        ran.append(name)
        if name == "stuck":
            release.wait(10)
        return name

    async def run() -> None:
        with pytest.raises(CardTimeoutError):
            await manager.run_card(operation, "stuck")
        with pytest.raises(CardTimeoutError):
            await manager.run_card(operation, "queued with a PIN")
        release.set()
        assert await manager.run_card(operation, "next") == "next"

    monkeypatch.setattr("mncd.core.cardthread.PcscContext", Context)
    asyncio.run(run())
    manager.close()
    assert ran == ["stuck", "next"]
