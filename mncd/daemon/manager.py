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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mncd import errors
from mncd.card.cardinfo import BasicInfo
from mncd.card.errors import (
    CardError,
    CardTimeoutError,
    KeyUnusableError,
    NoCardError,
    NotJpkiCardError,
    PcscUnavailableError,
    PinBlockedError,
    PinError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pcsc import PcscContext
from mncd.card.pin import PinPolicy
from mncd.daemon import operations
from mncd.daemon.cache import CardCache, CardRecord, CertificateRecord, card_id_for
from mncd.daemon.errors import LastTryError
from mncd.daemon.monitor import (
    CardAbsent,
    CardPresent,
    MonitorEvent,
    PcscUnavailable,
    ReadersChanged,
)
from mncd.daemon.pingate import CardChangedError, CardRef, PinGate, PinRequest, PinTicket
from mncd.daemon.udev import ReaderDevice
from mncd.jpki import certificates

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Longest a caller waits for one card operation. Real cards answer in seconds; a card or reader
#: that never answers must not hold callers forever (the operation itself cannot be interrupted:
#: it ends when the reader gives up or the card is pulled).
CARD_TIMEOUT = 60.0


@dataclass
class LiveCard:
    """A card currently in a reader."""

    reader: str
    atr: bytes
    snapshot: operations.CardSnapshot | None = None
    record: CardRecord | None = None
    sign_der: bytes | None = None  #: held in memory only, while the card is present
    error: str = ""  #: why the card is not usable ("unknown-card", ...)
    reading: asyncio.Task[None] | None = None  #: the read on insertion, while it runs

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


@dataclass
class CertificateView:
    """One certificate's status as callers see it."""

    present: bool = False
    source: str = "none"
    summary: certificates.CertificateSummary | None = None
    pin_tries_left: int = -1
    invalidated: bool = False
    #: The signing certificate the card held before, when it was found revoked and replaced.
    previous_invalidated: str = ""

    def state(self, now: dt.datetime | None = None) -> str:
        if self.invalidated:
            return "invalidated"
        if self.summary is None:
            return "unknown"
        now = now or dt.datetime.now(dt.UTC)
        if self.summary.is_expired(now):
            return "expired"
        window = certificates.generation_for(self.summary.algorithm).renewal_window
        if self.summary.not_after - now <= window:
            return "expiring"
        return "valid"


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
        self.last_record: CardRecord | None = None
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
        self.last_record = await loop.run_in_executor(None, self.cache.last)
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
        if isinstance(event, PcscUnavailable):
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

    def unsupported_readers(self) -> list[str]:
        """USB readers that are plugged in but that pcscd cannot drive (not CCID)."""
        return sorted(d.name for d in self.usb_readers.values() if not d.ccid)

    async def _read_inserted(self, reader: str) -> None:
        live = self.cards.get(reader)
        if live is None:
            return
        try:
            snapshot = await self.run_card(operations.read_card, reader)
            if self.cards.get(reader) is not live:
                return  # removed while being read
            # Certificates are parsed here: a card that returns garbage is not a usable card.
            record = await self._remember(snapshot)
        except NotJpkiCardError:
            live.error = "unknown-card"
            log.info("card in %s is not a My Number Card", reader)
        except (CardError, certificates.CertificateError) as exc:
            live.error = "unknown-card"
            log.warning("could not read the card in %s: %s", reader, exc)
        else:
            live.snapshot = snapshot
            live.record = record
            self.listener.card_inserted(reader)
        self._check_card_watchers()
        if self.cards.get(reader) is live:
            self.listener.state_changed()
            self._publish_certificate_states()

    async def _remember(self, snapshot: operations.CardSnapshot) -> CardRecord | None:
        if snapshot.auth_der is None:
            return None
        card_id = card_id_for(snapshot.auth_der)
        loop = asyncio.get_running_loop()
        old = await loop.run_in_executor(None, self.cache.load, card_id)
        record = CardRecord(
            card_id=card_id,
            token=snapshot.token.kind.value,
            auth=CertificateRecord(certificates.summarize(snapshot.auth_der), snapshot.auth_der),
            auth_ca=_public(snapshot.auth_ca_der),
            sign_ca=_public(snapshot.sign_ca_der),
            sign=old.sign if old else None,
            sign_present=snapshot.sign_present,
            pin_tries=dict(snapshot.tries),
            sign_invalidated=old.sign_invalidated if old else None,
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
        """Link a card seen for the first time to the card it renews, when that is clear.

        Renewal replaces the authentication certificate, by which cards are known, so a renewed
        card looks new. It is taken as the renewal of a known card when exactly one known card
        has an authentication certificate from the same CA, issued earlier, that is due for
        renewal or expired. With none or several (a family), nothing is linked.
        """
        assert record.auth is not None
        new = record.auth.summary
        now = dt.datetime.now(dt.UTC)
        loop = asyncio.get_running_loop()
        candidates = [
            other
            for other in await loop.run_in_executor(None, self.cache.all)
            if other.card_id != record.card_id
            and other.renewed_to is None
            and other.auth is not None
            and other.auth.summary.issuer == new.issuer
            and other.auth.summary.not_before < new.not_before
            and other.auth.summary.not_after - now
            <= certificates.generation_for(other.auth.summary.algorithm).renewal_window
        ]
        if len(candidates) != 1:
            return
        old = candidates[0]
        log.info("card %s renews card %s", record.card_id, old.card_id)
        old.renewed_to = record.card_id
        record.renewed_from = old.card_id
        await self._save(old, touch=False)

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
        if touch:
            self.last_record = record

    # -- queries ---------------------------------------------------------------------------

    def current(self) -> LiveCard | None:
        """The My Number Card in a reader (the first one found), if any."""
        for reader in self.readers or tuple(self.cards):
            live = self.cards.get(reader)
            if live is not None and live.snapshot is not None:
                return live
        return None

    def state(self) -> str:
        if not self.pcsc_available:
            return "pcsc-unavailable"
        if self.current() is not None:
            return "card-present"
        if any(live.error for live in self.cards.values()):
            return "unknown-card"
        if self.cards:
            return "card-present"  # inserted, still being read
        if not self.readers:
            return "no-reader"
        return "no-card"

    def certificate_view(self, which: str) -> CertificateView:
        live = self.current()
        record = live.record if live else self.last_record
        source = "card" if live else "cache"
        if record is None:
            return CertificateView()
        tries = record.pin_tries.get(which, -1)
        if which == "auth":
            if record.auth is None:
                return CertificateView(source=source, pin_tries_left=tries)
            return CertificateView(True, source, record.auth.summary, tries)
        summary = record.sign.summary if record.sign else None
        invalid = record.sign_invalidated
        invalidated = bool(invalid) and (
            summary is None or invalid["fingerprint"] == summary.fingerprint
        )
        previous = invalid["fingerprint"] if invalid and not invalidated else ""
        if not record.sign_present:
            return CertificateView(False, source, summary, -1, invalidated, previous)
        return CertificateView(True, source, summary, tries, invalidated, previous)

    def _publish_certificate_states(self) -> None:
        for which in ("auth", "sign"):
            state = self.certificate_view(which).state()
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
            await asyncio.wait(pending)
        live = self.current() if reader is None else self.cards.get(reader)
        if live is None or live.snapshot is None:
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
        reader: str | None = None,
    ) -> operations.SignResult:
        """Sign ``digest`` with the auth or sign key of the present card (the one in ``reader``
        when given), the PIN through the gate. Nothing is asked when the card, its certificate
        or its PIN cannot be used."""
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

        async def operation(ticket: PinTicket) -> operations.SignResult:
            return await self._gated(
                card, key.pin, operations.sign, key, hash_name, digest, ticket, certificate,
                issuer,
            )  # fmt: skip

        try:
            result = await self.gate.use(request, card, operation)
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
            live.sign_der = verified.certificate
        return verified

    def _changed(self) -> None:
        self.listener.state_changed()
        self._publish_certificate_states()

    def _learn_sign_certificate(self, live: LiveCard, record: CardRecord, der: bytes) -> bool:
        """Remember the signing certificate read from the card (summary only on disk)."""
        live.sign_der = der
        summary = certificates.summarize(der)
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
        record = live.record
        if live.sign_der is None:
            if sign is None:
                raise errors.PinRequired("the signing password is needed to read the certificate")
            card = self._card_for(live, sign.policy)
            issuer = live.snapshot.sign_ca_der

            async def read_certificate(ticket: PinTicket) -> bytes:
                return await self._gated(
                    card, sign.policy, operations.read_sign_certificate, ticket, issuer
                )

            der = await self.gate.use(sign, card, read_certificate)
            if record is not None:
                record.pin_tries[SIGN_KEY.name] = SIGN_KEY.pin.max_tries
                self._learn_sign_certificate(live, record, der)
            else:
                live.sign_der = der
        sign_der = live.sign_der
        assert sign_der is not None
        card = self._card_for(live, card_info.policy)

        async def read_personal_data(ticket: PinTicket) -> BasicInfo:
            return await self._gated(card, card_info.policy, operations.read_personal_data, ticket)

        info = await self.gate.use(card_info, card, read_personal_data)
        changed = operations.changed_personal_data(sign_der, info)
        if record is not None:
            record.pin_tries[card_info.policy.name] = card_info.policy.max_tries
            if changed:
                fingerprint = certificates.summarize(sign_der).fingerprint
                self._invalidate(record, fingerprint, "personal-data", changed)
            await self._save(record)
            self._changed()
        return changed

    def certificate(self, which: str) -> bytes:
        """Public certificates (auth, auth-ca, sign-ca) from the card or the cache."""
        live = self.current()
        record = live.record if live else self.last_record
        attr = {"auth": "auth", "auth-ca": "auth_ca", "sign-ca": "sign_ca"}[which]
        entry = getattr(record, attr) if record else None
        if entry is None or entry.der is None:
            raise errors.CertificateMissing(f"no {which} certificate is known")
        return entry.der


def _consume(future: asyncio.Future[Any]) -> None:
    """Take the outcome of an operation nobody waits for any more (no "never retrieved")."""
    if not future.cancelled():
        future.exception()


def _public(der: bytes | None) -> CertificateRecord | None:
    return CertificateRecord(certificates.summarize(der), der) if der is not None else None
