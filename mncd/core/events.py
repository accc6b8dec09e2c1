"""What happens to readers, cards and PINs, told once and heard by every front door.

Two streams come in: the PC/SC monitor's and udev's reports (:data:`MonitorEvent`,
:class:`ReaderDevice`). One stream goes out (:data:`CoreEvent`): the card manager publishes
each change once on its :class:`EventHub`, and the D-Bus interface, the PKCS#11 server and the
desktop notices subscribe. Above all, :class:`PinEvent` says what a PIN operation taught us of a
card's PIN, so that a PIN changed or blocked through one door ends what another door holds.

The events are plain immutable messages: NamedTuples (quicker to define at start-up than frozen
dataclasses), and classes of their own for those that carry nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mncd.core.cache import CardRecord

log = logging.getLogger(__name__)


class CardRef(NamedTuple):
    """A card as the user was told about it: its reader and the reader's event count then."""

    reader: str
    events: int


# -- coming in: the PC/SC monitor and udev ---------------------------------------------------


class ReadersChanged(NamedTuple):
    """The readers pcscd lists now."""

    readers: tuple[str, ...]


class CardPresent(NamedTuple):
    """A card is in ``reader`` (powered or not), answering to reset with ``atr``."""

    reader: str
    atr: bytes


class CardAbsent(NamedTuple):
    """The card in ``reader`` is gone."""

    reader: str


class PcscUnavailable:
    """pcscd cannot be reached (not running, or it stopped)."""

    __slots__ = ()


class Scanned:
    """Every reader and card present when the monitor (re)connected to pcscd has been reported."""

    __slots__ = ()


MonitorEvent = ReadersChanged | CardPresent | CardAbsent | PcscUnavailable | Scanned


class ReaderDevice(NamedTuple):
    """A USB smart-card or NFC reader as udev describes it."""

    sys_path: str
    vendor_id: int
    product_id: int
    name: str
    ccid: bool  # has a smart-card (class 0x0B) interface, so pcscd's CCID driver can serve it


# -- going out: what every front door hears --------------------------------------------------


class PinOutcome:
    """What a PIN operation taught us of one PIN on one card (plain strings: the daemon is
    ready sooner without an Enum class to build)."""

    VERIFIED = "verified"  #: the card took the PIN: its counter is full again
    REFUSED = "refused"  #: the card refused the PIN; tries are left
    BLOCKED = "blocked"  #: no tries are left
    CHANGED = "changed"  #: the card took a new PIN: the old one is worthless now
    COUNTED = "counted"  #: the counter was read, no try spent (another program may have spent some)


class PinEvent(NamedTuple):
    """``outcome`` for the PIN ``pin`` (a :class:`~mncd.card.pin.PinPolicy` name: auth, sign,
    card-info) of ``card``, with the tries left on the card after it."""

    card: CardRef
    pin: str
    outcome: str  #: a :class:`PinOutcome`
    tries_left: int


class CardInserted(NamedTuple):
    """A My Number Card in ``reader`` has been read and can be used."""

    reader: str


class CardRemoved(NamedTuple):
    """The card in ``reader`` is gone (pulled, swapped, or pcscd went away)."""

    reader: str


class CertificateStateChanged(NamedTuple):
    """The state of a certificate (auth, sign) as callers see it changed."""

    which: str
    state: str


class CardForgotten(NamedTuple):
    """The user forgot a card: its record (and its reminders) are gone."""

    record: CardRecord


class StateChanged:
    """Something GetStatus tells changed (readers, cards, certificates, counters)."""

    __slots__ = ()


STATE_CHANGED = StateChanged()

CoreEvent = (
    PinEvent | CardInserted | CardRemoved | CertificateStateChanged | CardForgotten | StateChanged
)


class Subscription:
    """One subscriber of an :class:`EventHub`; :meth:`cancel` ends it."""

    __slots__ = ("_hub", "handler")

    def __init__(self, hub: EventHub, handler: Callable[[CoreEvent], None]) -> None:
        self._hub = hub
        self.handler = handler

    def cancel(self) -> None:
        self._hub._subscriptions.pop(self, None)


class EventHub:
    """The core's events, told on the event loop to every subscriber, in the order they
    subscribed. A subscriber that fails is logged and the others still hear the event."""

    def __init__(self) -> None:
        self._subscriptions: dict[Subscription, None] = {}

    def subscribe(self, handler: Callable[[CoreEvent], None]) -> Subscription:
        subscription = Subscription(self, handler)
        self._subscriptions[subscription] = None
        return subscription

    def publish(self, event: CoreEvent) -> None:
        for subscription in list(self._subscriptions):
            try:
                subscription.handler(event)
            except Exception:
                log.exception("a subscriber failed on %s", type(event).__name__)
