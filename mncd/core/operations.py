"""Card operations as whole units of work, run one at a time on the card thread.

Each function opens its own PC/SC connection, does its work inside one transaction and closes
the connection; operations with a PIN end by resetting the card so no verified state lingers for
other programs. Those that check certificates or signatures import the X.509 layer
(cryptography) when they first run, on the card thread: the daemon is ready without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mncd.card.cardinfo import BasicInfo, CardInfoSession
from mncd.card.errors import (
    FileMissingError,
    KeyUnusableError,
    SecurityStatusError,
    TransportError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, Certificate, JpkiSession, KeySlot, TokenInfo
from mncd.card.manufacture import read_manufacture_number
from mncd.card.pcsc import PcscConnection, PcscContext
from mncd.card.pin import CARD_INFO_PIN, PinPolicy, wipe
from mncd.core.cache import manufacture_hash
from mncd.core.errors import DigestUnavailableError, PinChangeUnconfirmedError
from mncd.core.events import CardRef
from mncd.core.pingate import PinTicket, admit, same_card

#: The key each PIN of the JPKI AP guards.
KEYS_BY_PIN = {key.pin.name: key for key in (AUTH_KEY, SIGN_KEY)}


@dataclass
class CardSnapshot:
    """What mncd reads from a card on insertion (no PIN needed)."""

    reader: str
    atr: bytes
    token: TokenInfo
    auth_der: bytes | None
    auth_ca_der: bytes | None
    sign_ca_der: bytes | None
    sign_present: bool
    tries: dict[str, int] = field(default_factory=dict)
    #: The reader's event count while it was read: the card the user is told about.
    events: int = -1
    #: Keyed hash of the manufacture number (which physical card this is); None: unreadable.
    manufacture_hash: str | None = None


def _optional_certificate(session: JpkiSession, which: Certificate) -> bytes | None:
    try:
        return session.read_certificate(which)
    except FileMissingError:
        return None


def read_card(
    context: PcscContext,
    reader: str,
    salt: bytes | None = None,
    on_identified: Callable[[str | None], None] | None = None,
) -> CardSnapshot:
    """Read the card's public state: first which physical card it is (the manufacture number,
    kept only as its hash under ``salt``, handed to ``on_identified`` at once), then, by
    selecting the JPKI AP, whether it is a My Number Card and what it holds."""
    with context.connect(reader) as conn, conn.transaction():
        events = conn.card_events()
        physical = None
        if salt is not None:
            number = read_manufacture_number(conn)
            physical = manufacture_hash(salt, number) if number is not None else None
            del number  # never kept, logged or passed on
            if on_identified is not None:
                on_identified(physical)
        session = JpkiSession(conn)
        session.select_application()
        token = session.read_token_info()
        auth_der = _optional_certificate(session, Certificate.AUTH)
        auth_ca_der = _optional_certificate(session, Certificate.AUTH_CA)
        sign_ca_der = _optional_certificate(session, Certificate.SIGN_CA)
        sign_present = session.has_file(Certificate.SIGN.fid)
        tries = {"auth": session.pin_tries_left(AUTH_KEY)}
        if sign_present:
            tries["sign"] = session.pin_tries_left(SIGN_KEY)
        return CardSnapshot(
            reader=reader,
            atr=conn.atr,
            token=token,
            auth_der=auth_der,
            auth_ca_der=auth_ca_der,
            sign_ca_der=sign_ca_der,
            sign_present=sign_present,
            tries=tries,
            events=events,
            manufacture_hash=physical,
        )


@dataclass
class SignResult:
    signature: bytes
    certificate: bytes


def read_pin_tries(context: PcscContext, card: CardRef, policy: PinPolicy) -> int:
    """Tries left on ``policy``'s PIN of ``card``, read without spending one."""
    with context.connect(card.reader) as conn, conn.transaction():
        same_card(conn, card)
        if policy is CARD_INFO_PIN:
            return CardInfoSession(conn).pin_tries_left()
        return JpkiSession(conn).pin_tries_left(KEYS_BY_PIN[policy.name])


def read_all_pin_tries(context: PcscContext, card: CardRef) -> dict[str, int]:
    """Tries left on every PIN of ``card`` (auth, sign, card-info), read without spending one;
    a PIN the card lacks is left out. One transaction; no PIN is verified, so no reset."""
    with context.connect(card.reader) as conn, conn.transaction():
        same_card(conn, card)
        jpki = JpkiSession(conn)
        tries = {"auth": jpki.pin_tries_left(AUTH_KEY)}
        if jpki.has_file(SIGN_KEY.pin_fid):
            tries["sign"] = jpki.pin_tries_left(SIGN_KEY)
        tries[CARD_INFO_PIN.name] = CardInfoSession(conn).pin_tries_left()
        return tries


def change_pin(context: PcscContext, ticket: PinTicket) -> None:
    """Change the ticket's PIN to its new PIN in one transaction: VERIFY the current PIN through
    the gate, then CHANGE REFERENCE DATA. The card is reset afterwards.

    Until the card answers the change with 9000 the current PIN stays valid; a change whose
    answer never came raises :class:`PinChangeUnconfirmedError` (from the transport error).
    """
    policy, new_pin = ticket.policy, ticket.new_pin
    if new_pin is None:
        raise ValueError("no new PIN to change to")
    wipe(policy.check(new_pin))  # its shape, before anything reaches the card
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        if policy is CARD_INFO_PIN:
            info = CardInfoSession(conn)
            admit(conn, ticket, info.pin_tries_left, info.verify_pin)

            def change() -> None:
                info.change_pin(new_pin)
        else:
            key = KEYS_BY_PIN[policy.name]
            jpki = JpkiSession(conn)
            admit_jpki(conn, jpki, key, ticket)

            def change() -> None:
                jpki.change_pin(key, new_pin)

        try:
            with ticket.sending():  # the new PIN, also never after the caller stopped waiting
                change()
        except TransportError as exc:
            raise PinChangeUnconfirmedError("the card did not answer the PIN change") from exc


def sign(
    context: PcscContext,
    key: KeySlot,
    hash_name: str,
    digest: bytes,
    ticket: PinTicket,
    certificate: bytes | None,
    issuer: bytes | None = None,
    digest_for: Callable[[bytes], bytes] | None = None,
) -> SignResult:
    """VERIFY the key's PIN through the gate and sign ``digest`` in one transaction; verify
    the result.

    ``certificate`` is the key's certificate when known; the signing certificate is read from the
    card after the password when it is not, and then checked against its CA (``issuer``, the
    card's own CA certificate). ``digest_for(certificate)`` gives the digest instead of
    ``digest`` once the certificate is known (a document naming its signer). The card is reset
    afterwards.
    """
    from mncd.jpki import signatures

    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit_jpki(conn, session, key, ticket)
        certificate = _key_certificate(session, key, certificate, issuer)
        if digest_for is not None:
            try:
                digest = digest_for(certificate)
            except DigestUnavailableError as exc:
                exc.certificate = certificate  # read with the right password: worth keeping
                raise
        try:
            signature = session.sign(key, signatures.card_input(certificate, hash_name, digest))
        except KeyUnusableError as exc:
            exc.certificate = certificate  # read with the right password: the one refused
            raise
    signatures.verify(certificate, signature, hash_name, digest)
    return SignResult(signature, certificate)


def _key_certificate(
    session: JpkiSession, key: KeySlot, certificate: bytes | None, issuer: bytes | None
) -> bytes:
    """``certificate`` when known; else the signing certificate, read now that the password
    was verified and checked against its CA (``issuer``)."""
    if certificate is not None:
        return certificate
    if key is not SIGN_KEY:
        raise SecurityStatusError(0x6982, "certificate unknown")
    from mncd.jpki import certificates

    certificate = session.read_certificate(Certificate.SIGN)
    if issuer is not None:
        certificates.check_issued_by(certificate, issuer)
    return certificate


@dataclass
class ServiceSignatures:
    """Several signatures under one VERIFY, for a service (a government site's login or
    application), with the card's manufacture number when it was asked for (the caller turns
    it into the combination code and forgets it)."""

    signatures: list[bytes]
    certificate: bytes
    manufacture_number: str | None = field(default=None, repr=False)


def sign_for_service(
    context: PcscContext,
    key: KeySlot,
    digests: list[tuple[str, bytes]],
    ticket: PinTicket,
    certificate: bytes | None,
    issuer: bytes | None = None,
    read_number: bool = False,
) -> ServiceSignatures:
    """VERIFY the key's PIN once through the gate and sign every ``(hash, digest)`` in order,
    in one transaction (with ``read_number``, the manufacture number is read first, before
    the JPKI AP is selected); every signature verified. The card is reset afterwards."""
    from mncd.jpki import signatures

    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        number = _manufacture_number(conn, ticket) if read_number else None
        session = JpkiSession(conn)
        admit_jpki(conn, session, key, ticket)
        certificate = _key_certificate(session, key, certificate, issuer)
        try:
            answers = [
                session.sign(key, signatures.card_input(certificate, hash_name, digest))
                for hash_name, digest in digests
            ]
        except KeyUnusableError as exc:
            exc.certificate = certificate  # read with the right password: the one refused
            raise
    for (hash_name, digest), signature in zip(digests, answers, strict=True):
        signatures.verify(certificate, signature, hash_name, digest)
    return ServiceSignatures(answers, certificate, number)


def _manufacture_number(conn: PcscConnection, ticket: PinTicket) -> str | None:
    """The manufacture number of the ticket's card (checked to be the one asked for first)."""
    same_card(conn, ticket.card)
    return read_manufacture_number(conn)


def admit_jpki(conn: PcscConnection, session: JpkiSession, key: KeySlot, ticket: PinTicket) -> None:
    """The ticket's PIN for ``key`` through the gate, in the JPKI AP of ``session``."""
    admit(
        conn, ticket, lambda: session.pin_tries_left(key), lambda pin: session.verify_pin(key, pin)
    )


def verify_pin(context: PcscContext, key: KeySlot, ticket: PinTicket) -> None:
    """VERIFY the key's PIN through the gate, and nothing else (a PKCS#11 login). One
    transaction; the card is reset afterwards, so the card does not stay verified."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit_jpki(conn, session, key, ticket)


def read_sign_certificate(
    context: PcscContext, ticket: PinTicket, issuer: bytes | None = None
) -> bytes:
    """The signing certificate, read after the signing password (through the gate) and checked
    against its CA. One transaction; the card is reset afterwards."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit_jpki(conn, session, SIGN_KEY, ticket)
        certificate = session.read_certificate(Certificate.SIGN)
    if issuer is not None:
        from mncd.jpki import certificates

        certificates.check_issued_by(certificate, issuer)
    return certificate


def read_personal_data(context: PcscContext, ticket: PinTicket) -> BasicInfo:
    """The card's basic four information, read after the card-info PIN (through the gate);
    never the individual number. One transaction; the card is reset afterwards."""
    return read_card_info(context, ticket).info


@dataclass
class CardInfoRead:
    """The basic four information, with the manufacture number when it was asked for."""

    info: BasicInfo
    manufacture_number: str | None = field(default=None, repr=False)


def read_card_info(
    context: PcscContext, ticket: PinTicket, read_number: bool = False
) -> CardInfoRead:
    """:func:`read_personal_data`, and with ``read_number`` the manufacture number read first in
    the same transaction."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        number = _manufacture_number(conn, ticket) if read_number else None
        session = CardInfoSession(conn)
        admit(conn, ticket, session.pin_tries_left, session.verify_pin)
        return CardInfoRead(session.read_basic_info(), number)


def changed_personal_data(sign_certificate: bytes, info: BasicInfo) -> list[str]:
    """Kinds of data (name, address, birth_date, sex) on the card that differ from the signing
    certificate's; never their values."""
    from mncd.jpki import certificates

    return certificates.changed_fields(
        certificates.personal_data(sign_certificate),
        info.name,
        info.address,
        info.birth_date,
        info.sex,
    )
