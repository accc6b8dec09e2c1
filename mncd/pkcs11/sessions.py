"""One application's sessions and logins, and the rules its logins follow.

A login on a token ends with C_Logout, the close of the token's last session, the card's
removal, :data:`LOGIN_TIMEOUT` (a PIN held on the authentication token) or a PIN event from any
front door that makes the PIN it holds worthless: the PIN changed or blocked, or the card refused
it as this login holds it. The application's next call then finds itself logged out and asks
anew, instead of sending a PIN the card would count as a wrong try.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mncd.card.pin import wipe
from mncd.core.callers import Caller
from mncd.core.errors import LastTryError, PromptCancelledError, PromptUnavailableError
from mncd.core.events import CardRef, PinEvent, PinOutcome
from mncd.core.pingate import PinRequest
from mncd.pkcs11.context import ModuleContext
from mncd.pkcs11.mechanisms import Signing
from mncd.pkcs11.tokens import Slot, TokenSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest a PIN given to C_Login on the authentication token is held (seconds).
LOGIN_TIMEOUT = 15 * 60
#: PIN events after which no login holding that PIN stands.
ENDS_LOGINS = frozenset({PinOutcome.CHANGED, PinOutcome.BLOCKED})


@dataclass
class Login:
    """C_Login on one token: for which card, and (authentication token) the PIN held."""

    card: CardRef
    pin: bytearray | None
    last_try: bool
    timer: asyncio.TimerHandle | None = None

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.pin is not None:
            wipe(self.pin)
            self.pin = None


@dataclass
class SignOperation:
    spec: TokenSpec
    signing: Signing
    #: The PIN given to C_Login(CKU_CONTEXT_SPECIFIC) for this signature (wiped after).
    pin: bytearray | None = None

    def end(self) -> None:
        if self.pin is not None:
            wipe(self.pin)
            self.pin = None


@dataclass
class Session:
    handle: int
    slot_id: int
    card: CardRef
    rw: bool
    found: list[int] | None = None
    signing: SignOperation | None = None
    busy: bool = False  #: a card operation of this session is under way

    def end(self) -> None:
        if self.signing is not None:
            self.signing.end()
            self.signing = None
        self.found = None


class Logins:
    """The logins of one application, one per token (slot id)."""

    def __init__(
        self, context: ModuleContext, caller: Caller, ended: Callable[[int], None]
    ) -> None:
        self.context = context
        self.caller = caller
        self._ended = ended  #: told the slot id of every login that ends
        self._by_slot: dict[int, Login] = {}

    def __contains__(self, slot_id: int) -> bool:
        return slot_id in self._by_slot

    def get(self, slot: Slot) -> Login | None:
        """The login on ``slot``'s token, if it is for the card in it."""
        login = self._by_slot.get(slot.id)
        return login if login is not None and login.card == slot.card else None

    def start(self, slot: Slot, login: Login) -> None:
        if login.pin is not None:
            login.timer = asyncio.get_running_loop().call_later(
                self.context.login_timeout, self._expire, slot.id, login
            )
        self._by_slot[slot.id] = login

    def end(self, slot_id: int, why: str = "") -> None:
        login = self._by_slot.pop(slot_id, None)
        if login is not None:
            if why:
                log.info("PKCS#11 login of %s ended: %s", self.caller, why)
            login.end()
        self._ended(slot_id)

    def end_all(self) -> None:
        for slot_id in list(self._by_slot):
            self.end(slot_id)

    def cards_changed(self, current: dict[int, CardRef | None]) -> None:
        """The cards in the readers now, by slot: a login for a card that left ends."""
        for slot_id, login in list(self._by_slot.items()):
            if current.get(slot_id) != login.card:
                self.end(slot_id, "the card was removed")

    def heard(self, event: PinEvent) -> None:
        """A PIN event from any front door: a login holding a PIN the card will not take any
        more ends."""
        gate = self.context.manager.gate
        for slot_id, login in list(self._by_slot.items()):
            slot = self.context.slots.slot(slot_id)
            policy = slot.spec.key.pin if slot is not None else None
            if policy is None or login.card != event.card or policy.name != event.pin:
                continue
            if event.outcome in ENDS_LOGINS or (
                event.outcome == PinOutcome.REFUSED
                and login.pin is not None
                and gate.refused(event.card, policy, login.pin)
            ):
                self.end(slot_id, f"the {policy.label_en} was {event.outcome}")

    def _expire(self, slot_id: int, login: Login) -> None:
        if self._by_slot.get(slot_id) is login:
            self.end(slot_id, f"no longer held after {self.context.login_timeout:g} s")

    async def with_last_try(
        self, request: PinRequest, slot: Slot, run: Callable[[PinRequest], Awaitable[T]]
    ) -> T:
        """``run`` a gated operation with ``request``. With one try left, a PIN the application
        gave is sent only after the user agrees in the daemon's dialog (the application cannot
        say so itself). ``request.pin`` stays the caller's to wipe."""
        pin = request.pin
        try:
            return await run(dataclasses.replace(request, pin=_copy(pin)))
        except LastTryError:
            if pin is None or slot.card is None:
                raise
            try:
                agreed = await self.context.manager.gate.confirm_last_try(request, slot.card)
            except PromptUnavailableError:
                label = request.policy.label_en
                log.warning("one try left for the %s and no dialog to confirm it", label)
                raise
            if not agreed:
                raise PromptCancelledError("the last try was not confirmed") from None
            return await run(dataclasses.replace(request, pin=_copy(pin), allow_last_try=True))


def _copy(pin: bytearray | None) -> bytearray | None:
    return bytearray(pin) if pin is not None else None
