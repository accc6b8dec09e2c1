"""The one PIN gate: every PIN mncd sends to a card passes here.

On the card, inside the operation's own transaction (:func:`admit`): the card is the one the user
was told about (pcsc-lite's event counter of the reader has not moved), the live counter is read
with an empty VERIFY, a blocked PIN is refused, the last try needs a consent given for this card,
and only then is one VERIFY sent. Around the card (:class:`PinGate`): nothing is asked in vain,
one dialog is open at a time, a wrong PIN is asked again through the gate, and a dialog is
cancelled, with nothing sent, when its card or its caller goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from mncd import errors
from mncd.card.errors import CardError, PinBlockedError, PinFormatError, PinIncorrectError
from mncd.card.pin import PinPolicy, wipe
from mncd.core.errors import (
    LastTryError,
    OperationAbandonedError,
    PromptCancelledError,
    PromptUnavailableError,
)
from mncd.core.events import CardRef

if TYPE_CHECKING:
    from typing import Protocol

    from mncd.core.callers import Caller

    # Typing only: Protocol classes are slow to build, and the daemon is ready without them.
    class PinDialog(Protocol):
        """A PIN dialog as the gate uses it (the desktop's pinentry dialogs are one): opened as
        an async context, it asks and confirms; its texts are its own, in the user's language."""

        policy: PinPolicy

        async def __aenter__(self) -> PinDialog: ...
        async def __aexit__(self, *exc_info: object) -> None: ...
        async def confirm_last_try(self) -> bool: ...
        async def ask(self, tries_left: int, error: str = "") -> bytearray: ...
        async def ask_new(self, error: str = "") -> tuple[bytearray, bool]: ...
        async def ask_repeat(self) -> bytearray: ...
        def malformed_text(self) -> str: ...
        def wrong_text(self, tries_left: int) -> str: ...
        def mismatch_text(self) -> str: ...
        def unchanged_text(self) -> str: ...

    class Connection(Protocol):
        """A card connection, as far as the gate needs one."""

        def card_events(self) -> int: ...

    class DialogFactory(Protocol):
        """Opens a :class:`PinDialog` naming ``caller`` and ``purpose`` for ``policy``'s PIN
        (``changing``: a PIN change, the new PIN asked too)."""

        def __call__(
            self, caller: Caller, purpose: str, policy: PinPolicy, changing: bool
        ) -> PinDialog: ...


log = logging.getLogger(__name__)
T = TypeVar("T")

#: Calls that may wait for the open PIN dialog; one more gets ``Busy`` at once.
MAX_WAITING_DIALOGS = 4


class CardChangedError(CardError):
    """The reader holds another card than the one the PIN was meant for (or none)."""


@dataclass
class PinTicket:
    """One PIN on its way to one card, with the consent to use its last try if given (and, for
    a PIN change, the new PIN, its shape already checked).

    The event loop hands the ticket to the card thread and wipes it when it is done with it,
    also when its caller stopped waiting (a timeout, a cancellation) while the card thread still
    runs the operation. From then on the ticket is abandoned: :meth:`sending` refuses it inside
    the card transaction, before any command carrying the PIN; a command already under way keeps
    the PIN whole until it returns, and the card thread wipes it then."""

    policy: PinPolicy
    pin: bytearray
    card: CardRef
    last_try: bool = False
    #: Tries left on the card just before the VERIFY (set by :func:`admit`).
    tries_before: int = field(default=-1)
    new_pin: bytearray | None = None
    #: A command carrying the PIN went to the card (set on the card thread).
    sent: bool = False
    abandoned: bool = False
    _in_use: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextlib.contextmanager
    def sending(self) -> Iterator[PinTicket]:
        """Around one command carrying the PIN (card thread): refused once abandoned."""
        with self._lock:
            if self.abandoned:
                raise OperationAbandonedError("its caller stopped waiting; nothing was sent")
            self._in_use = self.sent = True
        try:
            yield self
        finally:
            with self._lock:
                self._in_use = False
                done = self.abandoned
            if done:
                self._wipe()

    def wipe(self) -> None:
        """The loop is done with the ticket: wiped now, or by the card thread when the command
        carrying it returns; it never reaches the card again either way."""
        with self._lock:
            self.abandoned = True
            if self._in_use:
                return
        self._wipe()

    def _wipe(self) -> None:
        wipe(self.pin)
        if self.new_pin is not None:
            wipe(self.new_pin)


def same_card(connection: Connection, card: CardRef) -> None:
    """Raise :class:`CardChangedError` unless the reader still holds ``card``."""
    if connection.card_events() != card.events:
        raise CardChangedError("the card was changed since the PIN was asked for")


def admit(
    connection: Connection,
    ticket: PinTicket,
    tries_left: Callable[[], int],
    verify: Callable[[bytearray], None],
) -> None:
    """Send the ticket's PIN to the card through the gate (card thread, inside a transaction)."""
    if ticket.abandoned:
        raise OperationAbandonedError("its caller stopped waiting; nothing was sent")
    same_card(connection, ticket.card)
    tries = tries_left()
    ticket.tries_before = tries
    if tries == 0:
        raise PinBlockedError(ticket.policy.label_en)
    if tries == 1 and not ticket.last_try:
        raise LastTryError(ticket.policy.label_en)
    with ticket.sending():
        verify(ticket.pin)


def no_dialog(caller: Caller, purpose: str, policy: PinPolicy, changing: bool) -> PinDialog:
    """The dialog factory of a gate that has none: nothing can be asked."""
    raise PromptUnavailableError("no PIN dialog is available")


@dataclass
class PinRequest:
    """What an operation needs a PIN for, and how the caller wants it handled."""

    policy: PinPolicy
    purpose: str  #: for the dialog: "sign a document", ...
    caller: Caller
    sender: str = ""  #: the caller's bus name: the dialog closes when it leaves
    pin: bytearray | None = None  #: given by the caller (shape already checked)
    allow_last_try: bool = False
    interactive: bool = True
    #: A PIN change: the dialog also asks for the new PIN, twice.
    changes_pin: bool = False
    #: The new PIN given by the caller with ``pin`` (shape already checked).
    new_pin: bytearray | None = None


class PinGate:
    """Runs operations with a PIN given by the caller or asked of the user."""

    def __init__(
        self,
        read_tries: Callable[[PinPolicy, CardRef], Awaitable[int]],
        watch_card: Callable[[CardRef, Callable[[], None]], Callable[[], None]],
        max_waiting: int = MAX_WAITING_DIALOGS,
    ) -> None:
        self._read_tries = read_tries
        self._watch_card = watch_card
        #: Opens the PIN dialogs; set by the daemon's wiring (the desktop's pinentry dialogs).
        self.dialogs: DialogFactory = no_dialog
        self.max_waiting = max_waiting
        #: ``watch_caller(bus_name, on_gone) -> stop``; set by the D-Bus front door.
        self.watch_caller: Callable[[str, Callable[[], None]], Callable[[], None]] = (
            lambda name, on_gone: lambda: None
        )
        self._dialog_lock = asyncio.Lock()
        self._waiting = 0
        #: Keyed digests (memory only) of PINs callers gave that the card refused, per card
        #: and PIN: given again, by any caller through any door, they are not sent.
        self._refused: dict[tuple[CardRef, str], set[bytes]] = {}
        self._key = os.urandom(32)

    def refused(self, card: CardRef, policy: PinPolicy, pin: bytes | bytearray) -> bool:
        """Whether the card refused ``pin`` as ``policy``'s PIN already (then it is not sent)."""
        return self._digest(pin) in self._refused.get((card, policy.name), ())

    def forget_refused(self, card: CardRef, policy: PinPolicy) -> None:
        """The PIN changed: a PIN refused before may be the right one now."""
        self._refused.pop((card, policy.name), None)

    def _digest(self, pin: bytes | bytearray) -> bytes:
        return hmac.digest(self._key, pin, "sha256")

    def note_refused(self, ticket: PinTicket) -> None:
        """The card refused ``ticket``'s PIN: no caller sends it to this card again."""
        card, policy = ticket.card, ticket.policy
        for key in [key for key in self._refused if key[0].reader == card.reader]:
            if key[0] != card:
                del self._refused[key]  # another card, or the same one inserted again
        self._refused.setdefault((card, policy.name), set()).add(self._digest(ticket.pin))

    async def use(
        self,
        request: PinRequest,
        card: CardRef,
        operation: Callable[[PinTicket], Awaitable[T]],
    ) -> T:
        """Run ``operation`` with a ticket for ``card``; with no PIN given, ask the user."""
        if request.pin is not None:
            if request.changes_pin and request.new_pin is None:
                raise errors.InvalidArgument("a PIN change given the current PIN needs the new one")
            ticket = PinTicket(
                request.policy, request.pin, card, request.allow_last_try, new_pin=request.new_pin
            )
            try:
                return await self._run(request, ticket, operation)
            finally:
                ticket.wipe()
        if not request.interactive:
            raise errors.PinRequired(
                f"the {request.policy.label_en} is needed and interactive=false forbids asking "
                f"({request.policy.label_ja}が必要です)"
            )
        async with self._turn(request, card) as tickets:
            return await self._ask_and_run(request, card, operation, tickets)

    async def _run(
        self, request: PinRequest, ticket: PinTicket, operation: Callable[[PinTicket], Awaitable[T]]
    ) -> T:
        """``operation(ticket)``, unless the card refused this PIN already: then it is refused
        again, with the live count, without sending it. Applications retry (pkcs11-tool repeats a
        failed signature with its PIN), several may hold the same stale PIN, and a person may
        type the same wrong PIN twice: the card would count each."""
        if not self.refused(ticket.card, ticket.policy, ticket.pin):
            return await operation(ticket)
        log.info("%s gave a %s the card refused already; not sent", request.caller,
                 ticket.policy.label_en)  # fmt: skip
        tries = await self._read_tries(ticket.policy, ticket.card)
        if tries == 0:
            raise PinBlockedError(ticket.policy.label_en)
        raise PinIncorrectError(tries, ticket.policy.label_en)

    async def confirm_last_try(self, request: PinRequest, card: CardRef) -> bool:
        """Ask the user whether the PIN the caller gave may use the card's last try (for
        callers that cannot say so themselves, such as PKCS#11 applications); one dialog at a
        time, closed when the card goes away."""
        async with (
            self._turn(request, card),
            self._dialog(request, request.policy) as dialog,
        ):
            return await dialog.confirm_last_try()

    def _dialog(self, request: PinRequest, policy: PinPolicy, changing: bool = False) -> PinDialog:
        """A PIN dialog for ``request``."""
        return self.dialogs(request.caller, request.purpose, policy, changing)

    @contextlib.asynccontextmanager
    async def _turn(self, request: PinRequest, card: CardRef) -> AsyncIterator[list[PinTicket]]:
        """One dialog at a time; cancelled when the card or the caller goes away. Yields the
        list the turn's tickets go in (what the user is told depends on whether one was sent)."""
        if self._dialog_lock.locked() and self._waiting >= self.max_waiting:
            raise errors.Busy(
                "another PIN dialog is open and others are waiting; try again when it is closed"
            )
        task = asyncio.current_task()
        assert task is not None
        gone: list[errors.MncdError] = []
        tickets: list[PinTicket] = []

        def abort(error: errors.MncdError) -> None:
            if not gone:
                gone.append(error)
                task.cancel()

        def card_gone() -> None:
            if any(ticket.sent for ticket in tickets):
                abort(errors.CardRemoved("the card was removed during the operation"))
            else:
                abort(errors.CardRemoved("the card was removed; nothing was sent to it"))

        stop_card = self._watch_card(card, card_gone)
        stop_caller = (
            self.watch_caller(
                request.sender, lambda: abort(errors.Cancelled("the caller left the bus"))
            )
            if request.sender
            else lambda: None
        )
        try:
            try:
                self._waiting += 1
                try:
                    await self._dialog_lock.acquire()
                finally:
                    self._waiting -= 1
                try:
                    yield tickets
                finally:
                    self._dialog_lock.release()
            except asyncio.CancelledError:
                if not gone:
                    raise
                task.uncancel()
                log.info("PIN dialog for %s closed: %s", request.caller, gone[0].text)
                raise gone[0] from None
        finally:
            stop_card()
            stop_caller()

    async def _ask_and_run(
        self,
        request: PinRequest,
        card: CardRef,
        operation: Callable[[PinTicket], Awaitable[T]],
        tickets: list[PinTicket],
    ) -> T:
        policy = request.policy
        # The pinentry starts first (it shows nothing yet): without one, the card is not touched.
        async with self._dialog(request, policy, changing=request.changes_pin) as dialog:
            tries = await self._read_tries(policy, card)  # the live counter, before showing
            if tries == 0:
                raise PinBlockedError(policy.label_en)
            consent = False
            error = ""
            new_pin: bytearray | None = None  #: kept when only the current PIN is asked again
            try:
                while True:
                    if tries == 1 and not consent:
                        if not await dialog.confirm_last_try():
                            raise PromptCancelledError("the last try was not confirmed")
                        consent = True
                    checked = _shaped(policy, await dialog.ask(tries, error))
                    if checked is None:
                        error = dialog.malformed_text()
                        continue
                    ticket = PinTicket(policy, checked, card, consent)
                    tickets.append(ticket)
                    try:
                        if request.changes_pin:
                            if new_pin is not None and new_pin == checked:
                                wipe(new_pin)  # retyped as the current one: choose anew
                                new_pin = None
                            if new_pin is None:
                                new_pin = await _ask_new_pin(dialog, checked)
                            ticket.new_pin = bytearray(new_pin)
                        return await self._run(request, ticket, operation)
                    except PinIncorrectError as exc:
                        tries = exc.tries_left
                        if tries == 0:
                            raise PinBlockedError(policy.label_en) from None
                        error = dialog.wrong_text(tries)
                    except LastTryError:
                        # Another program spent tries while the dialog was open: confirm first.
                        tries, consent, error = 1, False, ""
                    finally:
                        ticket.wipe()
            finally:
                if new_pin is not None:
                    wipe(new_pin)


def _shaped(policy: PinPolicy, entered: bytearray) -> bytearray | None:
    """``entered`` as the card takes it, or None when it is malformed (it is never sent); the
    entry itself is wiped either way."""
    try:
        return policy.check(entered)
    except PinFormatError:
        return None
    finally:
        wipe(entered)


async def _ask_new_pin(dialog: PinDialog, current: bytearray) -> bytearray:
    """The new PIN for a PIN change, entered twice in the same dialog: asked again (nothing
    sent to the card) while it is malformed, the two entries differ, or it is the current one."""
    policy = dialog.policy
    error = ""
    while True:
        entered, repeated = await dialog.ask_new(error)
        checked = _shaped(policy, entered)
        if checked is None:
            error = dialog.malformed_text()
            continue
        if not repeated:
            # The pinentry did not compare the two entries itself (no SETREPEAT): ask again.
            again = await dialog.ask_repeat()
            matches = again == checked
            wipe(again)
            if not matches:
                wipe(checked)
                error = dialog.mismatch_text()
                continue
        if checked == current:
            wipe(checked)
            error = dialog.unchanged_text()
            continue
        return checked
