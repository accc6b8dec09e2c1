"""The card manager: the card model with the use cases that need a PIN (sign, authenticate,
verify a PIN, check personal data, change a PIN, read the signing certificate, PIN status).

Every PIN goes through the one gate (:mod:`mncd.core.pingate`) and every card operation that uses
or reads a PIN through :meth:`CardManager._gated`, the one place that records what the operation
taught us of the PIN and publishes it as a :class:`~mncd.core.events.PinEvent`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from mncd import errors
from mncd.api import DIGEST_TIMEOUT
from mncd.card.cardinfo import BasicInfo
from mncd.card.digestinfo import LEGACY_HASHES
from mncd.card.errors import (
    KeyUnusableError,
    PinBlockedError,
    PinIncorrectError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pin import CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy
from mncd.core import operations
from mncd.core.cache import (
    CardCache,
    summarize,
)
from mncd.core.cardthread import CARD_TIMEOUT
from mncd.core.errors import (
    DigestUnavailableError,
    LastTryError,
    PinChangeUnconfirmedError,
)
from mncd.core.events import (
    STATE_CHANGED,
    CardPresent,
    CardRef,
    PinEvent,
    PinOutcome,
)
from mncd.core.installation import combination_code, installation_id
from mncd.core.model import CardModel, LiveCard
from mncd.core.pingate import CardChangedError, PinGate, PinRequest, PinTicket

log = logging.getLogger(__name__)
T = TypeVar("T")


class VerifiedPin(NamedTuple):
    """A PIN the card accepted: for which card, the PIN itself when kept (wipe it), whether
    the user consented to its last try, and the signing certificate when it was read."""

    card: CardRef
    pin: bytearray | None
    last_try: bool
    certificate: bytes | None


@dataclass
class ServiceAnswer:
    """Signatures for a service, the key's certificate, and when asked for this installation's
    id and the card's combination code with it."""

    signatures: list[bytes]
    certificate: bytes
    installation_id: str = ""
    combination_code: str = field(default="", repr=False)


@dataclass
class CardInfoAnswer:
    """The basic four information for the caller that asked (never kept), and when asked for
    this installation's id and the card's combination code with it."""

    info: BasicInfo
    installation_id: str = ""
    combination_code: str = field(default="", repr=False)


class CardManager(CardModel):
    """The card model with the use cases that need a PIN, all through one gate."""

    def __init__(self, cache: CardCache, timeout: float = CARD_TIMEOUT) -> None:
        super().__init__(cache, timeout)
        self.gate = PinGate(self.read_pin_tries, self.watch_card)

    # -- what a PIN operation teaches ------------------------------------------------------

    async def _gated(
        self,
        ticket: PinTicket,
        fn: Callable[..., T],
        *args: Any,
        outcome: str = PinOutcome.VERIFIED,
    ) -> T:
        """Run a card operation that sends ``ticket``'s PIN, and record what it taught us; a
        PIN the card refused is remembered by the gate (no caller sends it again)."""
        card, policy = ticket.card, ticket.policy
        try:
            result = await self.run_card(fn, *args)
        except PinIncorrectError as exc:
            self.gate.note_refused(ticket)
            refused = PinOutcome.BLOCKED if exc.tries_left == 0 else PinOutcome.REFUSED
            await self._pin_learnt(card, policy, refused, exc.tries_left)
            raise
        except PinBlockedError:
            await self._pin_learnt(card, policy, PinOutcome.BLOCKED, 0)
            raise
        except LastTryError:
            await self._pin_learnt(card, policy, PinOutcome.COUNTED, 1)
            raise
        except PinChangeUnconfirmedError:
            # The current PIN was right; whether the new one holds is unknown: what holds the
            # old one must not try it again.
            await self._pin_learnt(card, policy, PinOutcome.CHANGED, policy.max_tries)
            raise
        except CardChangedError:
            self._read_again(card)
            raise
        await self._pin_learnt(card, policy, outcome, policy.max_tries)
        return result

    def _read_again(self, card: CardRef) -> None:
        """A card operation found another card than ``card`` in its reader: if the monitor
        missed the swap, read the card as a new one."""
        live = self.cards.get(card.reader)
        if live is not None and live.ref == card:
            log.info("card in %s was changed unnoticed; reading it again", card.reader)
            self.handle_event(CardPresent(card.reader, live.atr))

    async def _pin_learnt(self, card: CardRef, policy: PinPolicy, outcome: str, tries: int) -> None:
        """The one place that records what a PIN operation taught us of ``policy``'s PIN on
        ``card``: its counter kept as status, and a :class:`PinEvent` for every front door."""
        live = self.cards.get(card.reader)
        record = live.record if live is not None and live.ref == card else None
        if record is not None and record.pin_tries.get(policy.name) != tries:
            record.pin_tries[policy.name] = tries
            await self._save(record)
            self.events.publish(STATE_CHANGED)
        if outcome == PinOutcome.CHANGED:
            self.gate.forget_refused(card, policy)
        if outcome not in (PinOutcome.VERIFIED, PinOutcome.COUNTED) or tries == 0:
            log.info("%s of the card in %s: %s, %d tries left", policy.label_en, card.reader,
                     outcome, tries)  # fmt: skip
        self.events.publish(PinEvent(card, policy.name, outcome, tries))

    async def _certificate_read(self, live: LiveCard, der: bytes) -> None:
        """The signing certificate was read from the card: held, and learnt (saved, announced)."""
        if self._learn_sign_certificate(live, der):
            assert live.record is not None
            await self._save(live.record)
            self._changed()

    # -- use cases -------------------------------------------------------------------------

    async def read_pin_tries(self, policy: PinPolicy, card: CardRef) -> int:
        """The live counter of ``policy``'s PIN on ``card`` (no try spent); kept as status."""
        try:
            tries = await self.run_card(operations.read_pin_tries, card, policy)
        except CardChangedError:
            self._read_again(card)
            raise
        await self._pin_learnt(card, policy, PinOutcome.COUNTED, tries)
        return tries

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
        if key is SIGN_KEY and hash_name in LEGACY_HASHES:
            # Front doors refuse it first; the signing key never signs a legacy hash.
            raise errors.InvalidArgument(f"the signing key does not sign {hash_name} digests")
        live = await self._usable_card(reader)
        certificate = self._key_certificate(live, key)
        card = self._card_for(live, key.pin)
        issuer = live.snapshot.sign_ca_der if live.snapshot else None
        source = None if digest_for is None else _from_loop(digest_for, DIGEST_TIMEOUT)

        async def operation(ticket: PinTicket) -> operations.SignResult:
            return await self._gated(
                ticket, operations.sign, key, hash_name, digest, ticket, certificate, issuer,
                source,
            )  # fmt: skip

        try:
            result = await self.gate.use(request, card, operation)
        except DigestUnavailableError as exc:
            # The caller declined after the certificate was read (it found it expired, say):
            # the status now shows the certificate, so nobody is asked for the password in vain.
            if exc.certificate is not None:
                await self._pin_learnt(card, key.pin, PinOutcome.VERIFIED, key.pin.max_tries)
                await self._certificate_read(live, exc.certificate)
            raise
        except KeyUnusableError as exc:
            await self._key_refused(live, key, card, exc)
            raise
        if key is SIGN_KEY:
            await self._certificate_read(live, result.certificate)
        return result

    async def _key_refused(
        self, live: LiveCard, key: KeySlot, card: CardRef, exc: KeyUnusableError
    ) -> None:
        """The card refused to sign with ``key`` after its PIN: for the signing key, the
        certificate is marked invalidated (the card no longer signs for it)."""
        record = live.record
        if key is not SIGN_KEY or record is None:
            return
        if exc.certificate is not None:  # read in this operation: the one refused
            await self._pin_learnt(card, key.pin, PinOutcome.VERIFIED, key.pin.max_tries)
            self._learn_sign_certificate(live, exc.certificate)
        # Mark what is known: the certificate, or the card's unread one.
        known = record.sign.summary.fingerprint if record.sign else f"card:{record.card_id}"
        self._invalidate(record, known, "refused")
        await self._save(record)
        self._changed()

    def _key_certificate(self, live: LiveCard, key: KeySlot) -> bytes | None:
        """The certificate of ``key`` on ``live`` when known (the signing certificate may still
        have to be read after the password); CertificateMissing when the card has none."""
        if key is AUTH_KEY:
            certificate = live.snapshot.auth_der if live.snapshot else None
            if certificate is None:
                raise errors.CertificateMissing("the card has no user-authentication certificate")
            return certificate
        if not live.snapshot or not live.snapshot.sign_present:
            raise errors.CertificateMissing("the card has no signing certificate")
        return live.sign_der

    async def sign_for_service(
        self,
        key: KeySlot,
        digests: list[tuple[str, bytes]],
        request: PinRequest,
        combination: bool = False,
    ) -> ServiceAnswer:
        """Sign every ``(hash, digest)`` with ``key`` under one PIN (one VERIFY) for a service
        such as a government site; with ``combination``, the card's combination code with this
        installation too (its manufacture number read in the same transaction, then forgotten)."""
        if key is SIGN_KEY and any(name in LEGACY_HASHES for name, _ in digests):
            raise errors.InvalidArgument("the signing key does not sign SHA-1 digests")
        live = await self._usable_card()
        certificate = self._key_certificate(live, key)
        card = self._card_for(live, key.pin)
        issuer = live.snapshot.sign_ca_der if live.snapshot else None

        async def operation(ticket: PinTicket) -> operations.ServiceSignatures:
            return await self._gated(
                ticket, operations.sign_for_service, key, digests, ticket, certificate, issuer,
                combination,
            )  # fmt: skip

        try:
            result = await self.gate.use(request, card, operation)
        except KeyUnusableError as exc:
            await self._key_refused(live, key, card, exc)
            raise
        if key is SIGN_KEY:
            await self._certificate_read(live, result.certificate)
        answer = ServiceAnswer(result.signatures, result.certificate)
        if combination:
            answer.installation_id, answer.combination_code = await self._combination(
                result.manufacture_number
            )
        return answer

    async def read_card_info(
        self, request: PinRequest, combination: bool = False
    ) -> CardInfoAnswer:
        """The card's basic four information after the card-info PIN (through the gate), for
        the caller that asked only: never cached or logged. With ``combination``, the card's
        combination code with this installation too."""
        live = await self._usable_card()
        card = self._card_for(live, request.policy)

        async def operation(ticket: PinTicket) -> operations.CardInfoRead:
            return await self._gated(ticket, operations.read_card_info, ticket, combination)

        result = await self.gate.use(request, card, operation)
        answer = CardInfoAnswer(result.info)
        if combination:
            answer.installation_id, answer.combination_code = await self._combination(
                result.manufacture_number
            )
        return answer

    async def _combination(self, number: str | None) -> tuple[str, str]:
        """This installation's id and the combination code of the card whose manufacture
        number is ``number`` (empty when the card has none that can be read)."""
        loop = asyncio.get_running_loop()
        installation = await loop.run_in_executor(None, installation_id, self.cache.root)
        if number is None:
            return installation, ""
        return installation, combination_code(number, installation)

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
        read_certificate = key is SIGN_KEY and live.sign_der is None
        issuer = live.snapshot.sign_ca_der if live.snapshot else None

        async def operation(ticket: PinTicket) -> VerifiedPin:
            if read_certificate:
                der = await self._gated(ticket, operations.read_sign_certificate, ticket, issuer)
            else:
                await self._gated(ticket, operations.verify_pin, key, ticket)
                der = None
            kept = bytearray(ticket.pin) if keep_pin else None
            return VerifiedPin(card, kept, ticket.last_try, der)

        verified = await self.gate.use(request, card, operation)
        if verified.certificate is not None:
            await self._certificate_read(live, verified.certificate)
        return verified

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
            return await self._gated(ticket, operations.read_personal_data, ticket)

        info = await self.gate.use(card_info, card, read_personal_data)
        changed = operations.changed_personal_data(sign_der, info)
        if record is not None:
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
                await self._pin_learnt(card, policy, PinOutcome.COUNTED, tries[policy.name])
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
            await self._gated(ticket, operations.change_pin, ticket, outcome=PinOutcome.CHANGED)

        await self.gate.use(request, card, operation)

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
            return await self._gated(ticket, operations.read_sign_certificate, ticket, issuer)

        der = await self.gate.use(request, card, read_certificate)
        self._learn_sign_certificate(live, der)
        return der


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
