"""The daemon's model of readers, cards and certificates, and the serialized card worker.

Monitor events come in; card reads and PIN operations run one at a time on a single card thread
(with its own PC/SC context); the cache is updated; listeners (the D-Bus service, notifications)
hear about every change. Status is computed from memory and never waits for the card.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mncd import errors
from mncd.card.cardinfo import BasicInfo
from mncd.card.errors import (
    CardError,
    CardInUseError,
    CardRemovedError,
    CardResetError,
    CardTimeoutError,
    KeyUnusableError,
    NoCardError,
    NotJpkiCardError,
    PcscUnavailableError,
    PinBlockedError,
    PinError,
    TransportError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pcsc import PcscContext
from mncd.card.pin import CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy
from mncd.daemon import operations
from mncd.daemon.cache import (
    CardCache,
    CardRecord,
    CertificateRecord,
    card_id_for,
    is_card_id,
    summarize,
)
from mncd.daemon.errors import DigestUnavailableError, LastTryError
from mncd.daemon.monitor import (
    CardAbsent,
    CardPresent,
    MonitorEvent,
    PcscUnavailable,
    ReadersChanged,
    Scanned,
)
from mncd.daemon.pingate import CardChangedError, CardRef, PinGate, PinRequest, PinTicket
from mncd.dbus.api import CARD_ID_DIGITS, CARD_ID_MIN_DIGITS, DIGEST_TIMEOUT
from mncd.jpki.errors import CertificateError
from mncd.jpki.summary import CertificateSummary

if TYPE_CHECKING:
    from mncd.daemon.udev import ReaderDevice

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Longest a caller waits for one card operation. Real cards answer in seconds; a card or reader
#: that never answers must not hold callers forever (the operation itself cannot be interrupted:
#: it ends when the reader gives up or the card is pulled).
CARD_TIMEOUT = 60.0
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
        """The card as the user is told about it (see :class:`~mncd.daemon.pingate.CardRef`)."""
        return CardRef(self.reader, self.snapshot.events if self.snapshot else -1)


@dataclass
class VerifiedPin:
    """A PIN the card accepted: for which card, the PIN itself when kept (wipe it), whether
    the user consented to its last try, and the signing certificate when it was read."""

    card: CardRef
    pin: bytearray | None
    last_try: bool
    certificate: bytes | None


@dataclass
class Listener:
    """Callbacks the manager invokes on the loop when something changes."""

    state_changed: Callable[[], None] = lambda: None
    card_inserted: Callable[[str], None] = lambda reader: None
    card_removed: Callable[[str], None] = lambda reader: None
    certificate_status: Callable[[str, str], None] = lambda which, state: None
    card_forgotten: Callable[[CardRecord], None] = lambda record: None


@dataclass
class CertificateView:
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


class CardManager:
    """Owns the card thread, the cache and the live state."""

    def __init__(
        self, cache: CardCache, listener: Listener | None = None, timeout: float = CARD_TIMEOUT
    ) -> None:
        self.cache = cache
        self.timeout = timeout
        self.listener = listener or Listener()
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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="card")
        self._local = threading.local()
        self._lock = asyncio.Lock()
        self._idle = threading.Event()  #: set while the card thread runs nothing
        self._idle.set()
        self._cert_states: dict[str, str] = {}
        self.usb_readers: dict[str, ReaderDevice] = {}  #: USB readers udev reports
        self.rescan: Callable[[], None] = lambda: None
        self.operations = 0  #: card operations run (for tests and benchmarks)
        self._card_watchers: dict[int, tuple[CardRef, Callable[[], None]]] = {}
        self.gate = PinGate(self.read_pin_tries, self.watch_card)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, self.cache.all)
        self.known = {record.card_id: record for record in records}
        self.last_record = records[0] if records else None
        await self._drop_unproven_links()
        self._publish_certificate_states()

    def close(self, grace: float = 0.0) -> bool:
        """Stop the card thread; True when it is idle within ``grace`` seconds.

        An operation under way is left to finish (it ends with a card reset), not interrupted.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        return self._idle.wait(grace)

    # -- the card thread -------------------------------------------------------------------

    def _context(self) -> PcscContext:
        context = getattr(self._local, "context", None)
        if context is None:
            context = PcscContext()
            self._local.context = context
        return context

    def _drop_context(self) -> None:
        context = getattr(self._local, "context", None)
        self._local.context = None
        if context is not None:
            with contextlib.suppress(Exception):  # the service is gone anyway
                context.release()

    def _on_card_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # pcscd may have restarted since the last operation: check the context first and take a
        # fresh one if it is stale. The operation itself runs once and is never repeated here:
        # it may have sent a PIN already, and a PIN goes to the card only when a caller asks.
        self._idle.clear()
        try:
            try:
                context = self._context()
                context.list_readers()
            except PcscUnavailableError:
                self._drop_context()
                context = self._context()
            try:
                return fn(context, *args)
            except PcscUnavailableError:
                self._drop_context()
                raise
        finally:
            self._idle.set()

    async def run_card(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one card operation on the card thread, strictly one at a time."""
        async with self._lock:
            self.operations += 1
            job = self._executor.submit(self._on_card_thread, fn, *args)
            result = asyncio.wrap_future(job)
            try:
                return await asyncio.wait_for(asyncio.shield(result), self.timeout)
            except (TimeoutError, asyncio.CancelledError) as exc:
                # Not started yet (queued behind a stuck one): cancelled here and now, so it
                # never starts: its caller has been told it failed, and it may carry a PIN.
                # Under way: the thread stays busy until the reader gives up; later operations
                # queue behind it on the same thread, so operations never overlap on the card.
                job.cancel()
                result.add_done_callback(_consume)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.warning("the card did not answer within %g s", self.timeout)
                raise CardTimeoutError("the card did not answer in time") from None

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
                self.listener.card_removed(reader)
        elif isinstance(event, ReadersChanged):
            self.pcsc_available = True
            self.readers = event.readers
        elif isinstance(event, CardPresent):
            self.pcsc_available = True
            live = LiveCard(event.reader, event.atr)
            self.cards[event.reader] = live
            live.reading = asyncio.get_running_loop().create_task(self._read_inserted(event.reader))
        elif isinstance(event, CardAbsent) and self.cards.pop(event.reader, None) is not None:
            self.listener.card_removed(event.reader)
        self._check_card_watchers()
        self.listener.state_changed()
        self._publish_certificate_states()

    def watch_card(self, card: CardRef, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` once when ``card`` leaves its reader (or is gone already)."""
        key = id(on_gone)
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
        self.listener.state_changed()

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
                self.listener.card_inserted(reader)
                break
            if live.error:
                live.known = None
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        self._check_card_watchers()
        if self.cards.get(reader) is live:
            self.listener.state_changed()
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
                self.listener.state_changed()

        return lambda physical: loop.call_soon_threadsafe(identified, physical)

    def _latest_with(self, physical: str) -> CardRecord | None:
        """The latest record of the physical card with this manufacture hash, if known."""
        same = [r for r in self.known.values() if r.manufacture_hash == physical]
        current = [r for r in same if r.renewed_to is None] or same
        return max(current, key=lambda r: r.last_seen, default=None)

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
        """Link certificates seen for the first time to the ones the same physical card held
        before (a renewal at the office), on evidence only: the same manufacture number.

        Renewal replaces the authentication certificate, by which cards are known, so the
        renewed card looks new. Without a readable manufacture number nothing is linked: a
        family member's card is another card, with its own reminders.
        """
        if record.manufacture_hash is None:
            return
        earlier = [
            other
            for other in self.known.values()
            if other.card_id != record.card_id
            and other.manufacture_hash == record.manufacture_hash
            and other.renewed_to is None
        ]
        if not earlier:
            return
        previous = max(earlier, key=lambda r: r.last_seen)
        log.info("card %s holds the renewed certificates of card %s", record.card_id,
                 previous.card_id)  # fmt: skip
        record.renewed_from = previous.card_id
        for old in earlier:
            old.renewed_to = record.card_id
            await self._save(old, touch=False)

    async def _drop_unproven_links(self) -> None:
        """Undo renewal links that rest on no evidence (made by guessing, before cards were
        recognised by their manufacture number): both ends must be the same physical card."""
        for record in list(self.known.values()):
            changed = False
            for attr in ("renewed_to", "renewed_from"):
                other = self.known.get(getattr(record, attr) or "")
                if getattr(record, attr) is None:
                    continue
                if (
                    other is None
                    or record.manufacture_hash is None
                    or other.manufacture_hash != record.manufacture_hash
                ):
                    setattr(record, attr, None)
                    changed = True
            if changed:
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
        :data:`~mncd.dbus.api.CARD_ID_MIN_DIGITS` characters. A card in a reader is not forgotten.
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
        self.listener.card_forgotten(record)
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
                self.listener.certificate_status(which, state)
            self._cert_states[which] = state

    # -- PIN operations --------------------------------------------------------------------

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

    async def read_pin_tries(self, policy: PinPolicy, card: CardRef) -> int:
        """The live counter of ``policy``'s PIN on ``card`` (no try spent); kept as status."""
        tries = await self._gated(card, policy, operations.read_pin_tries, card, policy)
        await self._note_tries(card, policy, tries)
        return tries

    async def _gated(self, card: CardRef, policy: PinPolicy, fn: Callable[..., T], *args: Any) -> T:
        """Run a card operation that reads or uses ``policy``'s PIN; keep what it taught us of
        the card's counter; a card found changed is read again."""
        try:
            return await self.run_card(fn, *args)
        except PinError as exc:
            tries = getattr(exc, "tries_left", None)
            if tries is not None:
                await self._note_tries(card, policy, tries)
            raise
        except LastTryError:
            await self._note_tries(card, policy, 1)
            raise
        except CardChangedError:
            live = self.cards.get(card.reader)
            if live is not None and live.ref == card:
                # The monitor missed a swap: this is a new card; read it as one.
                log.info("card in %s was changed unnoticed; reading it again", card.reader)
                self.handle_event(CardPresent(card.reader, live.atr))
            raise

    async def _note_tries(self, card: CardRef, policy: PinPolicy, tries: int) -> None:
        live = self.cards.get(card.reader)
        record = live.record if live is not None and live.ref == card else None
        if record is None or record.pin_tries.get(policy.name) == tries:
            return
        record.pin_tries[policy.name] = tries
        await self._save(record)
        self.listener.state_changed()

    def _card_for(self, live: LiveCard, policy: PinPolicy) -> CardRef:
        """The card a PIN request goes to; refused at once when its PIN is known blocked."""
        record = live.record
        if record is not None and record.pin_tries.get(policy.name) == 0:
            raise PinBlockedError(policy.label_en)
        return live.ref

    async def sign(
        self,
        key: KeySlot,
        hash_name: str,
        digest: bytes,
        request: PinRequest,
        digest_for: Callable[[bytes], Awaitable[bytes]] | None = None,
        reader: str | None = None,
    ) -> operations.SignResult:
        """Sign ``digest`` with the auth or sign key of the present card (the one in ``reader``
        when given), the PIN through the gate. Nothing is asked when the card, its certificate
        or its PIN cannot be used.

        ``digest_for(certificate)``: the digest comes from the caller once the certificate is
        known (after the PIN, in the same transaction); ``digest`` is then ignored."""
        live = await self._usable_card(reader)
        record = live.record
        if key is AUTH_KEY:
            certificate = live.snapshot.auth_der if live.snapshot else None
            if certificate is None:
                raise errors.CertificateMissing("the card has no user-authentication certificate")
        else:
            if not live.snapshot or not live.snapshot.sign_present:
                raise errors.CertificateMissing("the card has no signing certificate")
            certificate = live.sign_der
        card = self._card_for(live, key.pin)
        issuer = live.snapshot.sign_ca_der if live.snapshot else None
        source = None if digest_for is None else _from_loop(digest_for, DIGEST_TIMEOUT)

        async def operation(ticket: PinTicket) -> operations.SignResult:
            return await self._gated(
                card, key.pin, operations.sign, key, hash_name, digest, ticket, certificate,
                issuer, source,
            )  # fmt: skip

        try:
            result = await self.gate.use(request, card, operation)
        except DigestUnavailableError as exc:
            # The caller declined after the certificate was read (it found it expired, say):
            # the status now shows the certificate, so nobody is asked for the password in vain.
            if exc.certificate is not None and record is not None:
                record.pin_tries[key.name] = key.pin.max_tries
                self._learn_sign_certificate(live, record, exc.certificate)
                await self._save(record)
                self._changed()
            raise
        except KeyUnusableError:
            if key is SIGN_KEY and record is not None:
                # Mark what is known: the cached certificate, or the card's unread one.
                known = record.sign.summary.fingerprint if record.sign else f"card:{record.card_id}"
                self._invalidate(record, known, "refused")
                await self._save(record)
                self._changed()
            raise
        if record is not None:
            changed = record.pin_tries.get(key.name) != key.pin.max_tries
            record.pin_tries[key.name] = key.pin.max_tries
            if key is SIGN_KEY:
                changed = self._learn_sign_certificate(live, record, result.certificate) or changed
            if changed:
                await self._save(record)
                self._changed()
        return result

    async def verify_pin(
        self, key: KeySlot, request: PinRequest, reader: str, keep_pin: bool = False
    ) -> VerifiedPin:
        """Verify ``key``'s PIN on the card in ``reader`` through the gate, as an operation of
        its own that ends with a card reset (a PKCS#11 login). For the signing key, the signing
        certificate is read in the same operation when it is not known yet. With ``keep_pin``,
        a copy of the PIN that verified is returned: the caller wipes it."""
        live = await self._usable_card(reader)
        if key is SIGN_KEY and not (live.snapshot and live.snapshot.sign_present):
            raise errors.CertificateMissing("the card has no signing certificate")
        card = self._card_for(live, key.pin)
        record = live.record
        read_certificate = key is SIGN_KEY and live.sign_der is None
        issuer = live.snapshot.sign_ca_der if live.snapshot else None

        async def operation(ticket: PinTicket) -> VerifiedPin:
            if read_certificate:
                der = await self._gated(
                    card, key.pin, operations.read_sign_certificate, ticket, issuer
                )
            else:
                await self._gated(card, key.pin, operations.verify_pin, key, ticket)
                der = None
            kept = bytearray(ticket.pin) if keep_pin else None
            return VerifiedPin(card, kept, ticket.last_try, der)

        verified = await self.gate.use(request, card, operation)
        if record is not None:
            changed = record.pin_tries.get(key.name) != key.pin.max_tries
            record.pin_tries[key.name] = key.pin.max_tries
            der = verified.certificate
            if der is not None:
                changed = self._learn_sign_certificate(live, record, der) or changed
            if changed:
                await self._save(record)
                self._changed()
        elif verified.certificate is not None:
            self._hold_sign_certificate(live, verified.certificate)
        return verified

    def _changed(self) -> None:
        self.listener.state_changed()
        self._publish_certificate_states()

    def _hold_sign_certificate(self, live: LiveCard, der: bytes) -> None:
        """Keep the signing certificate read from the card in memory while the card stays in;
        GetStatus tells so (``certificate_held``)."""
        newly = live.sign_der is None
        live.sign_der = der
        if newly:
            self.listener.state_changed()

    def _learn_sign_certificate(self, live: LiveCard, record: CardRecord, der: bytes) -> bool:
        """Remember the signing certificate read from the card (summary only on disk)."""
        self._hold_sign_certificate(live, der)
        summary = summarize(der)
        if record.sign is not None and record.sign.summary == summary:
            return False
        if record.sign is not None:
            # A different certificate than before: the old one was revoked and replaced.
            self._invalidate(record, record.sign.summary.fingerprint, "replaced")
        record.sign = CertificateRecord(summary)  # summary only, never the DER
        return True

    async def check_personal_data(
        self, card_info: PinRequest, sign: PinRequest | None
    ) -> list[str]:
        """Compare the card's basic four information with the signing certificate.

        Each PIN goes through the gate on its own: the signing password first, only when the
        certificate was not read in this insertion, then the card-info PIN. Returns the kinds of
        data that changed; a change marks the certificate invalidated.
        """
        live = await self._usable_card()
        if not live.snapshot or not live.snapshot.sign_present:
            raise errors.CertificateMissing("the card has no signing certificate")
        if live.sign_der is None:
            if sign is None:
                raise errors.PinRequired("the signing password is needed to read the certificate")
            await self._read_sign_certificate(live, sign)
        sign_der = live.sign_der
        assert sign_der is not None
        record = live.record
        card = self._card_for(live, card_info.policy)

        async def read_personal_data(ticket: PinTicket) -> BasicInfo:
            return await self._gated(card, card_info.policy, operations.read_personal_data, ticket)

        info = await self.gate.use(card_info, card, read_personal_data)
        changed = operations.changed_personal_data(sign_der, info)
        if record is not None:
            record.pin_tries[card_info.policy.name] = card_info.policy.max_tries
            if changed:
                fingerprint = summarize(sign_der).fingerprint
                self._invalidate(record, fingerprint, "personal-data", changed)
            await self._save(record)
            self._changed()
        return changed

    async def pin_status(self) -> dict[str, int]:
        """The live counters of every PIN of the present card (auth, sign, card-info), read
        without spending a try; kept as status. A PIN the card lacks is left out."""
        live = await self._usable_card()
        card = live.ref
        tries = await self.run_card(operations.read_all_pin_tries, card)
        for policy in (AUTH_KEY.pin, SIGN_KEY.pin, CARD_INFO_PIN):
            if policy.name in tries:
                await self._note_tries(card, policy, tries[policy.name])
        return tries

    async def change_pin(self, request: PinRequest) -> None:
        """Change the PIN of ``request.policy`` on the present card: the current PIN through the
        gate, then the new one, in one card transaction. Nothing is asked when the PIN cannot
        be used; until the card confirms the change the current PIN stays valid."""
        live = await self._usable_card()
        policy = request.policy
        if policy is SIGN_PASSWORD and not (live.snapshot and live.snapshot.sign_present):
            raise errors.CertificateMissing(
                "the card has no signing certificate, so it has no signing password to change"
            )
        card = self._card_for(live, policy)

        async def operation(ticket: PinTicket) -> None:
            await self._gated(card, policy, operations.change_pin, ticket)

        await self.gate.use(request, card, operation)
        log.info("the %s of the card in %s was changed", policy.label_en, card.reader)
        record = live.record
        if record is not None:
            record.pin_tries[policy.name] = policy.max_tries
            await self._save(record)
            self._changed()

    async def read_signing_certificate(self, request: PinRequest) -> bytes:
        """The signing certificate read from the card after the signing password (asked every
        time: it holds personal data), checked against the card's signing CA."""
        live = await self._usable_card()
        if not live.snapshot or not live.snapshot.sign_present:
            raise errors.CertificateMissing("the card has no signing certificate")
        der = await self._read_sign_certificate(live, request)
        if live.record is not None:
            await self._save(live.record)
            self._changed()
        return der

    async def _read_sign_certificate(self, live: LiveCard, request: PinRequest) -> bytes:
        """The signing certificate of ``live``, read after the signing password (through the
        gate) and checked against the card's signing CA; held while the card stays in, its
        summary in the record (the caller saves it), the password's counter noted as full."""
        assert live.snapshot is not None
        card = self._card_for(live, request.policy)
        issuer = live.snapshot.sign_ca_der

        async def read_certificate(ticket: PinTicket) -> bytes:
            return await self._gated(
                card, request.policy, operations.read_sign_certificate, ticket, issuer
            )

        der = await self.gate.use(request, card, read_certificate)
        record = live.record
        if record is not None:
            record.pin_tries[SIGN_KEY.name] = SIGN_KEY.pin.max_tries
            self._learn_sign_certificate(live, record, der)
        else:
            self._hold_sign_certificate(live, der)
        return der

    def certificate(self, which: str) -> bytes:
        """Public certificates (auth, auth-ca, sign-ca) from the card or the cache."""
        record, _source = self.shown_record()
        attr = {"auth": "auth", "auth-ca": "auth_ca", "sign-ca": "sign_ca"}[which]
        entry = getattr(record, attr) if record else None
        if entry is None or entry.der is None:
            raise errors.CertificateMissing(f"no {which} certificate is known")
        return entry.der


def _from_loop(fn: Callable[[bytes], Awaitable[bytes]], timeout: float) -> Callable[[bytes], bytes]:
    """``fn`` (a coroutine function of the event loop) as a blocking call for the card thread."""
    loop = asyncio.get_running_loop()

    def blocking(value: bytes) -> bytes:
        future = asyncio.run_coroutine_threadsafe(fn(value), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise DigestUnavailableError("the caller did not give the digest in time") from None

    return blocking


def _consume(future: asyncio.Future[Any]) -> None:
    """Take the outcome of an operation nobody waits for any more (no "never retrieved")."""
    if not future.cancelled():
        future.exception()


def _public(der: bytes | None) -> CertificateRecord | None:
    return CertificateRecord.of(der) if der is not None else None
