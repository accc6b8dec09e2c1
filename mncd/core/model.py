"""The daemon's live model of readers, cards and certificates.

Monitor events come in; a card just inserted is read on the card thread; what is read is kept in
the cache (:mod:`mncd.core.cache`) and linked to what the same physical card held before
(:mod:`mncd.core.identity`); every change is published once on :attr:`CardModel.events`. Status
is computed from memory and never waits for the card.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from mncd import errors
from mncd.api import CARD_ID_DIGITS, CARD_ID_MIN_DIGITS
from mncd.card.errors import (
    CardError,
    CardInUseError,
    CardRemovedError,
    CardResetError,
    CardTimeoutError,
    NoCardError,
    NotJpkiCardError,
    PcscUnavailableError,
    TransportError,
)
from mncd.core import operations
from mncd.core.cache import (
    CardCache,
    CardRecord,
    CertificateRecord,
    card_id_for,
    is_card_id,
    summarize,
)
from mncd.core.cardthread import CARD_TIMEOUT, CardThread
from mncd.core.events import (
    STATE_CHANGED,
    CardAbsent,
    CardForgotten,
    CardInserted,
    CardPresent,
    CardRef,
    CardRemoved,
    CertificateStateChanged,
    EventHub,
    MonitorEvent,
    PcscUnavailable,
    ReadersChanged,
    Scanned,
)
from mncd.jpki.errors import CertificateError
from mncd.jpki.summary import CertificateSummary

if TYPE_CHECKING:
    from mncd.card.pcsc import PcscContext
    from mncd.core.events import ReaderDevice

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Reading a card on insertion again after a transient failure (another program holding it,
#: a reset, no answer): first after RETRY_FIRST seconds, doubling up to RETRY_MAX.
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
#: Transient failures (other than another program's hold) before a card counts as unreadable;
#: a timeout leaves the card thread waiting for the reader, so it is tried once more only.
MAX_TRANSIENT_FAILURES = 5
MAX_TIMEOUTS = 2
#: Why a card in a reader cannot be used (LiveCard.error) and the state each gives.
NOT_JPKI = "unknown-card"
UNREADABLE = "unreadable-card"


def system_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class LiveCard:
    """A card currently in a reader."""

    reader: str
    atr: bytes
    snapshot: operations.CardSnapshot | None = None
    record: CardRecord | None = None
    sign_der: bytes | None = None  #: held in memory only, while the card is present
    error: str = ""  #: why the card is not usable (NOT_JPKI, UNREADABLE)
    reading: asyncio.Task[None] | None = None  #: the read on insertion, while it runs
    #: While it is read: what the cache knows of this physical card (by its manufacture number).
    known: CardRecord | None = None
    in_use: bool = False  #: the last try to read it found another program holding it

    @property
    def being_read(self) -> bool:
        return self.snapshot is None and not self.error

    @property
    def ref(self) -> CardRef:
        """The card as the user is told about it (see :class:`~mncd.core.pingate.CardRef`)."""
        return CardRef(self.reader, self.snapshot.events if self.snapshot else -1)


class CertificateView(NamedTuple):
    """One certificate's status as callers see it."""

    present: bool = False
    source: str = "none"
    summary: CertificateSummary | None = None
    pin_tries_left: int = -1
    invalidated: bool = False
    #: The signing certificate the card held before, when it was found revoked and replaced.
    previous_invalidated: str = ""
    #: The daemon holds the certificate itself: read from the card in reader since it was
    #: inserted (the signing certificate, after the signing password; never kept on disk).
    held: bool = False

    def state(self, now: dt.datetime | None = None) -> str:
        """invalidated, unknown, or by Japan's calendar: valid, expiring, expired."""
        if self.invalidated:
            return "invalidated"
        if self.summary is None:
            return "unknown"
        return self.summary.state(now)


class CardModel:
    """The live state of readers and cards, what the cache knows of each card, and the events
    that tell every front door about changes. Card reads run on :attr:`thread`."""

    def __init__(self, cache: CardCache, timeout: float = CARD_TIMEOUT) -> None:
        self.cache = cache
        self.thread = CardThread(timeout)
        #: Every change, told once: the front doors subscribe.
        self.events = EventHub()
        self.pcsc_available = True
        self.readers: tuple[str, ...] = ()
        self.cards: dict[str, LiveCard] = {}
        #: Set once the monitor has told every reader and card present (or that pcscd is not
        #: there): before, the state would be a guess.
        self.scanned = asyncio.Event()
        self.last_record: CardRecord | None = None
        #: Every card in the cache, by card id (kept in step with every write).
        self.known: dict[str, CardRecord] = {}
        #: The daemon's "now" (see mncd.daemon.clock); every date it tells comes from it.
        self.clock: Callable[[], dt.datetime] = system_clock
        self._salt: bytes | None = None  #: read or made with the first card read
        self._salt_failed = False
        self._cert_states: dict[str, str] = {}
        self.usb_readers: dict[str, ReaderDevice] = {}  #: USB readers udev reports
        self.rescan: Callable[[], None] = lambda: None
        self._card_watchers: dict[object, tuple[CardRef, Callable[[], None]]] = {}

    @property
    def timeout(self) -> float:
        return self.thread.timeout

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, self.cache.all)
        self.known = {record.card_id: record for record in records}
        self.last_record = records[0] if records else None
        await self._drop_unproven_links()
        self._publish_certificate_states()

    def close(self, grace: float = 0.0) -> bool:
        """Stop the card thread; True when it is idle within ``grace`` seconds."""
        return self.thread.close(grace)

    async def run_card(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one card operation on the card thread, strictly one at a time."""
        return await self.thread.run(fn, *args)

    # -- monitor events --------------------------------------------------------------------

    def handle_event(self, event: MonitorEvent) -> None:
        if isinstance(event, Scanned):
            self.scanned.set()
            return
        if isinstance(event, PcscUnavailable):
            self.scanned.set()
            removed = list(self.cards)
            self.pcsc_available = False
            self.readers = ()
            self.cards.clear()
            for reader in removed:
                self.events.publish(CardRemoved(reader))
        elif isinstance(event, ReadersChanged):
            self.pcsc_available = True
            self.readers = event.readers
        elif isinstance(event, CardPresent):
            self.pcsc_available = True
            live = LiveCard(event.reader, event.atr)
            self.cards[event.reader] = live
            live.reading = asyncio.get_running_loop().create_task(self._read_inserted(event.reader))
        elif isinstance(event, CardAbsent) and self.cards.pop(event.reader, None) is not None:
            self.events.publish(CardRemoved(event.reader))
        self._check_card_watchers()
        self.events.publish(STATE_CHANGED)
        self._publish_certificate_states()

    def watch_card(self, card: CardRef, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` once when ``card`` leaves its reader (or is gone already)."""
        key = object()  # one watch, even when the same callback watches twice
        self._card_watchers[key] = (card, on_gone)
        self._check_card_watchers()
        return lambda: self._card_watchers.pop(key, None)

    def _check_card_watchers(self) -> None:
        for key, (card, on_gone) in list(self._card_watchers.items()):
            live = self.cards.get(card.reader)
            if live is None or (live.snapshot is not None and live.ref != card):
                del self._card_watchers[key]
                on_gone()

    def handle_usb_reader(self, action: str, device: ReaderDevice) -> None:
        """udev saw a USB reader come or go: let PC/SC rescan, and note readers it cannot use."""
        if action == "add":
            self.usb_readers[device.sys_path] = device
            if device.ccid:
                log.info("USB smart-card reader plugged in: %s", device.name)
            else:
                log.warning(
                    "%s is plugged in, but it is not a CCID reader: pcscd cannot use it "
                    "without a separate driver",
                    device.name,
                )
        else:
            self.usb_readers.pop(device.sys_path, None)
            log.info("USB smart-card reader unplugged: %s", device.name)
        self.rescan()
        self.events.publish(STATE_CHANGED)

    def _read_card(
        self, context: PcscContext, reader: str, identified: Callable[[str | None], None]
    ) -> operations.CardSnapshot:
        """On the card thread: :func:`operations.read_card` with this user's salt."""
        return operations.read_card(context, reader, self._card_salt(), identified)

    def _card_salt(self) -> bytes | None:
        """This user's salt (:meth:`CardCache.salt`), read or made on the card thread when the
        first card is read (nothing is written at start); None when it cannot be kept."""
        if self._salt is None and not self._salt_failed:
            try:
                self._salt = self.cache.salt()
            except OSError as exc:
                self._salt_failed = True
                log.warning("cannot keep a salt in the state directory (%s); cards are not "
                            "linked", exc)  # fmt: skip
        return self._salt

    def unsupported_readers(self) -> list[str]:
        """USB readers that are plugged in but that pcscd cannot drive (not CCID)."""
        return sorted(d.name for d in self.usb_readers.values() if not d.ccid)

    async def _read_inserted(self, reader: str) -> None:
        """Read a card just inserted; transient failures are tried again with backoff for as
        long as the card stays. Only a card that answers and has no JPKI AP is unknown."""
        live = self.cards.get(reader)
        if live is None:
            return
        delay, failures, timeouts = RETRY_FIRST, 0, 0
        while self.cards.get(reader) is live:
            try:
                snapshot = await self.run_card(self._read_card, reader, self._identified_soon(live))
                if self.cards.get(reader) is not live:
                    return  # removed while being read
                # Certificates are parsed here: a card that returns garbage is not usable.
                record = await self._remember(snapshot)
            except NotJpkiCardError:
                live.error = NOT_JPKI
                log.info("card in %s is not a My Number Card", reader)
            except CardInUseError:
                if not live.in_use:
                    log.info("another program holds the card in %s; reading it when it lets go",
                             reader)  # fmt: skip
                live.in_use = True
                failures = 0  # as long as it takes: the card is fine, only busy
            except PcscUnavailableError:
                return  # the monitor reports it, and reports the card again once pcscd is back
            except (CardTimeoutError, CardResetError, CardRemovedError, NoCardError,
                    TransportError) as exc:  # fmt: skip
                live.in_use = False
                failures += 1
                timeouts += isinstance(exc, CardTimeoutError)
                if failures >= MAX_TRANSIENT_FAILURES or timeouts >= MAX_TIMEOUTS:
                    live.error = UNREADABLE
                    log.warning("could not read the card in %s (%s); giving up after %d tries",
                                reader, exc, failures)  # fmt: skip
                else:
                    log.info("reading the card in %s failed (%s); trying again", reader, exc)
            except (CardError, CertificateError) as exc:
                live.error = NOT_JPKI
                log.warning("the card in %s answers, but not as a My Number Card: %s", reader, exc)
            else:
                live.snapshot, live.record, live.known = snapshot, record, None
                live.in_use = False
                self.events.publish(CardInserted(reader))
                break
            if live.error:
                live.known = None
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        self._check_card_watchers()
        if self.cards.get(reader) is live:
            self.events.publish(STATE_CHANGED)
            self._publish_certificate_states()

    def _identified_soon(self, live: LiveCard) -> Callable[[str | None], None]:
        """A callback for the card thread: the card being read is the physical card with this
        manufacture hash; its cached record shows (marked as from the cache) while it is read."""
        loop = asyncio.get_running_loop()

        def identified(physical: str | None) -> None:
            if self.cards.get(live.reader) is not live or live.snapshot is not None:
                return
            live.known = self._latest_with(physical) if physical else None
            if live.known is not None:
                self.events.publish(STATE_CHANGED)

        return lambda physical: loop.call_soon_threadsafe(identified, physical)

    def _latest_with(self, physical: str) -> CardRecord | None:
        """The latest record of the physical card with this manufacture hash, if known."""
        from mncd.core import identity  # renewal links: loaded with the first card read

        return identity.latest_with(self.known.values(), physical)

    async def _remember(self, snapshot: operations.CardSnapshot) -> CardRecord | None:
        if snapshot.auth_der is None:
            return None
        card_id = card_id_for(snapshot.auth_der)
        loop = asyncio.get_running_loop()
        old = await loop.run_in_executor(None, self.cache.load, card_id)
        record = CardRecord(
            card_id=card_id,
            token=snapshot.token.kind.value,
            auth=CertificateRecord.of(snapshot.auth_der),
            auth_ca=_public(snapshot.auth_ca_der),
            sign_ca=_public(snapshot.sign_ca_der),
            sign=old.sign if old else None,
            sign_present=snapshot.sign_present,
            pin_tries=dict(snapshot.tries),
            sign_invalidated=old.sign_invalidated if old else None,
            manufacture_hash=snapshot.manufacture_hash or (old.manufacture_hash if old else None),
        )
        if old is not None:
            record.renewed_to, record.renewed_from = old.renewed_to, old.renewed_from
        else:
            await self._link_renewal(record)
        if record.sign is not None and not snapshot.sign_present:
            # The card had a signing certificate and has none now: the old one is dead.
            self._invalidate(record, record.sign.summary.fingerprint, "missing")
        await self._save(record)
        return record

    async def _link_renewal(self, record: CardRecord) -> None:
        """Link a card seen for the first time to what the same physical card held before."""
        from mncd.core import identity

        for old in identity.link_renewal(record, self.known.values()):
            await self._save(old, touch=False)

    async def _drop_unproven_links(self) -> None:
        """Undo renewal links that rest on no evidence (see
        :func:`~mncd.core.identity.drop_unproven_links`)."""
        if not any(r.renewed_to or r.renewed_from for r in self.known.values()):
            return  # nothing linked: the daemon is ready without the module
        from mncd.core import identity

        for record in identity.drop_unproven_links(self.known):
            log.info("card %s: a renewal link without evidence was removed", record.card_id)
            await self._save(record, touch=False)

    def _invalidate(
        self, record: CardRecord, fingerprint: str, reason: str, fields: list[str] | None = None
    ) -> None:
        current = record.sign_invalidated
        if current and (current["fingerprint"], current["reason"]) == (fingerprint, reason):
            return
        log.warning("signing certificate of card %s invalidated (%s)", record.card_id, reason)
        record.sign_invalidated = {
            "fingerprint": fingerprint,
            "reason": reason,
            "fields": list(fields or []),
        }

    async def _save(self, record: CardRecord, touch: bool = True) -> None:
        if touch:
            record.last_seen = time.time()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.cache.save, record)
        except OSError as exc:
            log.warning("could not write the cache: %s", exc)
        self.known[record.card_id] = record
        if touch:
            self.last_record = record

    async def forget(self, card_id: str) -> CardRecord:
        """Remove a card the user no longer has: its cache record (and so its reminders).

        ``card_id`` is a card id as GetStatus shows it, or an unambiguous prefix of at least
        :data:`~mncd.api.CARD_ID_MIN_DIGITS` characters. A card in a reader is not forgotten.
        """
        if not is_card_id(card_id) or len(card_id) < CARD_ID_MIN_DIGITS:
            raise errors.InvalidArgument(
                f"a card id is {CARD_ID_MIN_DIGITS} to {CARD_ID_DIGITS} lower-case hex digits, as "
                "mncctl status shows it (カードIDが正しくありません)"
            )
        matches = [r for r in self.known.values() if r.card_id.startswith(card_id)]
        if not matches:
            raise errors.InvalidArgument(
                f"no card {card_id} is known (そのカードは記録されていません)"
            )
        if len(matches) > 1:
            raise errors.InvalidArgument(
                f"{card_id} names more than one card; give more digits (桁を増やしてください)"
            )
        record = matches[0]
        for live in self.cards.values():
            if record.card_id in {r.card_id for r in (live.record, live.known) if r is not None}:
                raise errors.InvalidArgument(
                    f"card {record.card_id} is in {live.reader}: take it out first "
                    "(カードを取り出してから実行してください)"
                )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.cache.delete, record.card_id)
        except OSError as exc:
            raise errors.Failed(f"could not remove the card from the cache: {exc}") from exc
        del self.known[record.card_id]
        if self.last_record is not None and self.last_record.card_id == record.card_id:
            self.last_record = max(self.known.values(), key=lambda r: r.last_seen, default=None)
        log.info("card %s forgotten", record.card_id)
        self.events.publish(CardForgotten(record))
        self._changed()
        return record

    # -- queries ---------------------------------------------------------------------------

    def current(self) -> LiveCard | None:
        """The My Number Card in a reader (the first one found), if any."""
        for reader in self.readers or tuple(self.cards):
            live = self.cards.get(reader)
            if live is not None and live.snapshot is not None:
                return live
        return None

    def reading(self) -> LiveCard | None:
        """A card in a reader that is being read (inserted, not yet known to be usable)."""
        return next((live for live in self.cards.values() if live.being_read), None)

    def state(self) -> str:
        """card-present only once the card was read; reading while it is."""
        if not self.pcsc_available:
            return "pcsc-unavailable"
        if self.current() is not None:
            return "card-present"
        if self.reading() is not None:
            return "reading"
        for error in (NOT_JPKI, UNREADABLE):
            if any(live.error == error for live in self.cards.values()):
                return error
        if not self.readers:
            return "no-reader"
        return "no-card"

    def shown_record(self) -> tuple[CardRecord | None, str]:
        """The card GetStatus describes and where its data come from: the card in the reader
        (card), the one being read as far as the cache knows it (cache), or the card seen
        last (cache). Never another card's data for a card being read."""
        live = self.current()
        if live is not None:
            return live.record, "card"
        reading = self.reading()
        if reading is not None:
            return reading.known, "cache"
        return self.last_record, "cache"

    def certificate_view(self, which: str) -> CertificateView:
        record, source = self.shown_record()
        if record is None:
            return CertificateView()
        tries = record.pin_tries.get(which, -1)
        if which == "auth":
            if record.auth is None:
                return CertificateView(source=source, pin_tries_left=tries)
            held = source == "card" and record.auth.der is not None
            return CertificateView(True, source, record.auth.summary, tries, held=held)
        summary = record.sign.summary if record.sign else None
        invalid = record.sign_invalidated
        invalidated = bool(invalid) and (
            summary is None or invalid["fingerprint"] == summary.fingerprint
        )
        previous = invalid["fingerprint"] if invalid and not invalidated else ""
        if not record.sign_present:
            return CertificateView(False, source, summary, -1, invalidated, previous)
        live = self.current()
        held = source == "card" and live is not None and live.sign_der is not None
        return CertificateView(True, source, summary, tries, invalidated, previous, held)

    def certificate_states(self) -> dict[str, str]:
        """The state of ``auth`` and ``sign`` now, by the daemon's clock: of the card present
        or seen last; while a card is being read, as they were before (not yet known anew)."""
        if self.reading() is not None and self._cert_states:
            return dict(self._cert_states)
        now = self.clock()
        return {which: self.certificate_view(which).state(now) for which in ("auth", "sign")}

    def recheck(self) -> None:
        """The date may have changed (midnight in Japan, a clock set or a resume): announce
        every certificate state that changed with it."""
        self._changed()

    def _publish_certificate_states(self) -> None:
        if self.reading() is not None:
            return  # announced once the card has been read, not "unknown" in between
        for which, state in self.certificate_states().items():
            if self._cert_states.get(which) not in (None, state):
                self.events.publish(CertificateStateChanged(which, state))
            self._cert_states[which] = state

    # -- what the card in the reader tells ------------------------------------------------

    async def _usable_card(self, reader: str | None = None) -> LiveCard:
        """The card in ``reader`` (default: the first My Number Card found), once read."""
        if not self.pcsc_available:
            raise PcscUnavailableError("the PC/SC service (pcscd) is not available")
        # A card just inserted is still being read: wait for that instead of failing.
        pending = [c.reading for c in self.cards.values() if c.reading and not c.reading.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.timeout)
        live = self.current() if reader is None else self.cards.get(reader)
        if live is None or live.snapshot is None:
            reading = self.reading()
            if reading is not None and reading.in_use:
                raise CardInUseError("another program is using the card")
            if reading is not None:
                raise CardTimeoutError("the card could not be read in time")
            if any(c.error == UNREADABLE for c in self.cards.values()):
                raise NoCardError("the card in the reader could not be read")
            raise NoCardError("no My Number Card is inserted")
        if live.snapshot.token.kind.value not in ("card", "unknown"):
            raise errors.NotSupported(
                f"tokens of kind {live.snapshot.token.kind.value} are not supported"
            )
        return live

    def _changed(self) -> None:
        self.events.publish(STATE_CHANGED)
        self._publish_certificate_states()

    def _hold_sign_certificate(self, live: LiveCard, der: bytes) -> None:
        """Keep the signing certificate read from the card in memory while the card stays in;
        GetStatus tells so (``certificate_held``)."""
        newly = live.sign_der is None
        live.sign_der = der
        if newly:
            self.events.publish(STATE_CHANGED)

    def _learn_sign_certificate(self, live: LiveCard, der: bytes) -> bool:
        """Hold the signing certificate read from the card and remember it in the card's record
        (summary only on disk); True when the record changed (the caller saves it)."""
        self._hold_sign_certificate(live, der)
        record = live.record
        if record is None:
            return False
        summary = summarize(der)
        if record.sign is not None and record.sign.summary == summary:
            return False
        if record.sign is not None:
            # A different certificate than before: the old one was revoked and replaced.
            self._invalidate(record, record.sign.summary.fingerprint, "replaced")
        record.sign = CertificateRecord(summary)  # summary only, never the DER
        return True

    def certificate(self, which: str) -> bytes:
        """Public certificates (auth, auth-ca, sign-ca) from the card or the cache."""
        record, _source = self.shown_record()
        attr = {"auth": "auth", "auth-ca": "auth_ca", "sign-ca": "sign_ca"}[which]
        entry = getattr(record, attr) if record else None
        if entry is None or entry.der is None:
            raise errors.CertificateMissing(f"no {which} certificate is known")
        return entry.der


def _public(der: bytes | None) -> CertificateRecord | None:
    return CertificateRecord.of(der) if der is not None else None
