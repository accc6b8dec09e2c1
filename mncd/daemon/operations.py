"""Card operations as whole units of work, run one at a time on the card thread.

Each function opens its own PC/SC connection, does its work inside one transaction and closes
the connection; operations with a PIN end by resetting the card so no verified state lingers for
other programs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mncd.card.cardinfo import BasicInfo, CardInfoSession
from mncd.card.errors import FileMissingError, SecurityStatusError
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, Certificate, JpkiSession, KeySlot, TokenInfo
from mncd.card.pcsc import PcscContext
from mncd.card.pin import CARD_INFO_PIN, PinPolicy
from mncd.daemon.pingate import CardRef, PinTicket, admit, same_card
from mncd.jpki import certificates, signatures

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


def _optional_certificate(session: JpkiSession, which: Certificate) -> bytes | None:
    try:
        return session.read_certificate(which)
    except FileMissingError:
        return None


def read_card(context: PcscContext, reader: str) -> CardSnapshot:
    """Identify the card by selecting the JPKI AP and read its public state."""
    with context.connect(reader) as conn, conn.transaction():
        events = conn.card_events()
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


def sign(
    context: PcscContext,
    key: KeySlot,
    hash_name: str,
    digest: bytes,
    ticket: PinTicket,
    certificate: bytes | None,
    issuer: bytes | None = None,
) -> SignResult:
    """VERIFY the key's PIN through the gate and sign ``digest`` in one transaction; verify
    the result.

    ``certificate`` is the key's certificate when known; the signing certificate is read from the
    card after the password when it is not, and then checked against its CA (``issuer``, the
    card's own CA certificate). The card is reset afterwards.
    """
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit(
            conn,
            ticket,
            lambda: session.pin_tries_left(key),
            lambda pin: session.verify_pin(key, pin),
        )
        if certificate is None:
            if key is not SIGN_KEY:
                raise SecurityStatusError(0x6982, "certificate unknown")
            certificate = session.read_certificate(Certificate.SIGN)
            if issuer is not None:
                certificates.check_issued_by(certificate, issuer)
        signature = session.sign(key, signatures.card_input(certificate, hash_name, digest))
    signatures.verify(certificate, signature, hash_name, digest)
    return SignResult(signature, certificate)


def verify_pin(context: PcscContext, key: KeySlot, ticket: PinTicket) -> None:
    """VERIFY the key's PIN through the gate, and nothing else (a PKCS#11 login). One
    transaction; the card is reset afterwards, so the card does not stay verified."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit(
            conn,
            ticket,
            lambda: session.pin_tries_left(key),
            lambda pin: session.verify_pin(key, pin),
        )


def read_sign_certificate(
    context: PcscContext, ticket: PinTicket, issuer: bytes | None = None
) -> bytes:
    """The signing certificate, read after the signing password (through the gate) and checked
    against its CA. One transaction; the card is reset afterwards."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        admit(
            conn,
            ticket,
            lambda: session.pin_tries_left(SIGN_KEY),
            lambda pin: session.verify_pin(SIGN_KEY, pin),
        )
        certificate = session.read_certificate(Certificate.SIGN)
    if issuer is not None:
        certificates.check_issued_by(certificate, issuer)
    return certificate


def read_personal_data(context: PcscContext, ticket: PinTicket) -> BasicInfo:
    """The card's basic four information, read after the card-info PIN (through the gate);
    never the individual number. One transaction; the card is reset afterwards."""
    with context.connect(ticket.card.reader) as conn, conn.transaction(reset_after=True):
        session = CardInfoSession(conn)
        admit(conn, ticket, session.pin_tries_left, session.verify_pin)
        return session.read_basic_info()


def changed_personal_data(sign_certificate: bytes, info: BasicInfo) -> list[str]:
    """Kinds of data (name, address, birth_date, sex) on the card that differ from the signing
    certificate's; never their values."""
    return certificates.changed_fields(
        certificates.personal_data(sign_certificate),
        info.name,
        info.address,
        info.birth_date,
        info.sex,
    )
