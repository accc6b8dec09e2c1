"""In-process: a PIN whose caller stopped waiting never reaches the card, a PIN being sent stays
whole until the card answers, and "nothing was sent" is said only when it is true."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mncd import errors
from mncd.card.pin import AUTH_PIN
from mncd.core.callers import Caller
from mncd.core.errors import OperationAbandonedError
from mncd.core.events import CardRef
from mncd.core.pingate import PinGate, PinRequest, PinTicket, admit

CARD = CardRef("reader", 1)


class Connection:
    def card_events(self) -> int:
        return CARD.events


def on_card_thread(ticket: PinTicket, tries_left, verify) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []

    def run() -> None:
        try:
            admit(Connection(), ticket, tries_left, verify)
            outcome.append("sent")
        except OperationAbandonedError:
            outcome.append("abandoned")

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_pin_whose_caller_stopped_waiting_is_not_sent():
    ticket = PinTicket(AUTH_PIN, bytearray(b"1234"), CARD)
    counting, go_on = threading.Event(), threading.Event()
    sent: list[bytes] = []

    def tries_left() -> int:  # the empty VERIFY before the PIN, on a slow card
        counting.set()
        go_on.wait(10)
        return 3

    thread, outcome = on_card_thread(ticket, tries_left, lambda pin: sent.append(bytes(pin)))
    assert counting.wait(10)
    ticket.wipe()  # the caller timed out: the event loop is done with the ticket
    go_on.set()
    thread.join(10)
    assert outcome == ["abandoned"] and sent == [] and not ticket.sent
    assert ticket.pin == bytearray(4)


def test_a_pin_being_sent_stays_whole_until_the_card_answers():
    ticket = PinTicket(AUTH_PIN, bytearray(b"1234"), CARD)
    sending, answer = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def verify(pin: bytearray) -> None:
        sending.set()
        answer.wait(10)
        seen.append(bytes(pin))  # what the transport would read while the card works

    thread, outcome = on_card_thread(ticket, lambda: 3, verify)
    assert sending.wait(10)
    ticket.wipe()  # the caller stopped waiting while the VERIFY is under way
    assert ticket.pin == bytearray(b"1234")
    answer.set()
    thread.join(10)
    assert outcome == ["sent"] and seen == [b"1234"] and ticket.sent
    assert ticket.pin == bytearray(4)  # wiped by the card thread once the command returned
    with pytest.raises(OperationAbandonedError), ticket.sending():
        pass


class Dialog:
    """A PIN dialog that answers at once (or never, with ``hang``)."""

    policy = AUTH_PIN

    def __init__(self, hang: bool) -> None:
        self.hang = hang

    async def __aenter__(self) -> Dialog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def ask(self, tries_left: int, error: str = "") -> bytearray:
        if self.hang:
            await asyncio.Event().wait()
        return bytearray(b"1234")


def removal_while(hang: bool, sends: bool) -> errors.CardRemoved:
    """The card leaves its reader while the dialog is open (``hang``) or while the operation
    runs, having sent its PIN (``sends``) or not: what the caller is told."""

    async def run() -> errors.CardRemoved:
        watchers = []

        async def tries(policy, card) -> int:
            return 3

        def watch(card, on_gone):
            watchers.append(on_gone)
            return lambda: None

        gate = PinGate(tries, watch)
        gate.dialogs = lambda caller, purpose, policy, changing: Dialog(hang)
        in_operation = asyncio.Event()

        async def operation(ticket: PinTicket) -> None:
            if sends:
                with ticket.sending():
                    pass
            in_operation.set()
            await asyncio.Event().wait()

        request = PinRequest(AUTH_PIN, "log in", Caller(1))
        call = asyncio.ensure_future(gate.use(request, CARD, operation))
        while not watchers or (not hang and not in_operation.is_set()):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        watchers[0]()
        with pytest.raises(errors.CardRemoved) as raised:
            await asyncio.wait_for(call, 5)
        return raised.value

    return asyncio.run(run())


def test_nothing_was_sent_is_said_only_when_true():
    assert removal_while(hang=True, sends=False).text.endswith("nothing was sent to it")
    assert removal_while(hang=False, sends=False).text.endswith("nothing was sent to it")
    removed = removal_while(hang=False, sends=True)
    assert "nothing was sent" not in removed.text and "during the operation" in removed.text
