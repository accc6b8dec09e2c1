"""Card operations as whole units of work, run one at a time on the card thread.

Each function opens its own PC/SC connection, does its work inside one transaction and closes
the connection; operations with a PIN end by resetting the card so no verified state lingers for
other programs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mncd.card.cardinfo import CardInfoSession
from mncd.card.errors import FileMissingError, SecurityStatusError
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, Certificate, JpkiSession, KeySlot, TokenInfo
from mncd.card.pcsc import PcscContext
from mncd.jpki import certificates, signatures


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


def _optional_certificate(session: JpkiSession, which: Certificate) -> bytes | None:
    try:
        return session.read_certificate(which)
    except FileMissingError:
        return None


def read_card(context: PcscContext, reader: str) -> CardSnapshot:
    """Identify the card by selecting the JPKI AP and read its public state."""
    with context.connect(reader) as conn, conn.transaction():
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
        )


@dataclass
class SignResult:
    signature: bytes
    certificate: bytes


def sign(
    context: PcscContext,
    reader: str,
    key: KeySlot,
    hash_name: str,
    digest: bytes,
    pin: bytearray,
    certificate: bytes | None,
    issuer: bytes | None = None,
) -> SignResult:
    """VERIFY the key's PIN and sign ``digest`` in one transaction; verify the result.

    ``certificate`` is the key's certificate when known; the signing certificate is read from the
    card after the password when it is not, and then checked against its CA (``issuer``, the
    card's own CA certificate). The card is reset afterwards.
    """
    with context.connect(reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        session.verify_pin(key, pin)
        if certificate is None:
            if key is not SIGN_KEY:
                raise SecurityStatusError(0x6982, "certificate unknown")
            certificate = session.read_certificate(Certificate.SIGN)
            if issuer is not None:
                certificates.check_issued_by(certificate, issuer)
        signature = session.sign(key, signatures.card_input(certificate, hash_name, digest))
    signatures.verify(certificate, signature, hash_name, digest)
    return SignResult(signature, certificate)


@dataclass
class PersonalDataCheck:
    changed: list[str]  #: kinds of data that differ (name, address, birth_date, sex)
    sign_certificate: bytes


def check_personal_data(
    context: PcscContext,
    reader: str,
    card_info_pin: bytearray,
    sign_pin: bytearray | None,
    sign_certificate: bytes | None,
    issuer: bytes | None = None,
) -> PersonalDataCheck:
    """Compare the card's basic four information with the signing certificate's.

    Reads the basic information with the card-info PIN (never the individual number) and, when
    the signing certificate is not already known, reads it with the signing password. One
    transaction; the card is reset afterwards.
    """
    with context.connect(reader) as conn, conn.transaction(reset_after=True):
        info = CardInfoSession(conn).read_basic_info(card_info_pin)
        if sign_certificate is None:
            if sign_pin is None:
                raise SecurityStatusError(0x6982, "the signing password is needed")
            session = JpkiSession(conn)
            session.verify_pin(SIGN_KEY, sign_pin)
            sign_certificate = session.read_certificate(Certificate.SIGN)
            if issuer is not None:
                certificates.check_issued_by(sign_certificate, issuer)
    changed = certificates.changed_fields(
        certificates.personal_data(sign_certificate),
        info.name,
        info.address,
        info.birth_date,
        info.sex,
    )
    return PersonalDataCheck(changed, sign_certificate)
