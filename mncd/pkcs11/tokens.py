"""Slots, tokens and objects: the card in each reader as PKCS#11 shows it.

Like OpenSC's JPKI mapping, each reader has two slots, one per PIN: the user-authentication
token and the digital-signature token, with the same labels and CKA_IDs (01 and 02 for the keys
and their certificates, 03 and 04 for the CA certificates). A token is present while a My Number
Card that was read is in the reader. Each token holds its certificate, public key, private key
(CKA_SIGN) and its CA's certificate. The signing certificate holds personal data: it, and the
keys that go with it, are visible only after C_Login on the signing token. The signing key is
CKA_ALWAYS_AUTHENTICATE: a PIN for every signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.core.events import CardRef
from mncd.core.manager import CardManager
from mncd.core.model import LiveCard
from mncd.jpki import certificates
from mncd.jpki.calendar import JAPAN
from mncd.pkcs11.constants import (
    CK_CERTIFICATE_CATEGORY_AUTHORITY,
    CK_CERTIFICATE_CATEGORY_TOKEN_USER,
    CKA,
    CKC_X_509,
    CKF_LOGIN_REQUIRED,
    CKF_PROTECTED_AUTHENTICATION_PATH,
    CKF_TOKEN_INITIALIZED,
    CKF_USER_PIN_COUNT_LOW,
    CKF_USER_PIN_FINAL_TRY,
    CKF_USER_PIN_INITIALIZED,
    CKF_USER_PIN_LOCKED,
    CKF_WRITE_PROTECTED,
    CKK,
    CKO,
    UNAVAILABLE,
)
from mncd.pkcs11.mechanisms import KeyInfo
from mncd.pkcs11.wire import Value

#: Slots per reader: one per PIN of the JPKI application.
SLOTS_PER_READER = 2
#: Object handles: slot id × this + the object's kind (never 0, CK_INVALID_HANDLE).
HANDLES_PER_SLOT = 8
#: Attributes of a private key that never leave the card.
SENSITIVE = frozenset(
    {CKA.VALUE, CKA.PRIVATE_EXPONENT, CKA.PRIME_1, CKA.PRIME_2, CKA.EXPONENT_1, CKA.EXPONENT_2,
     CKA.COEFFICIENT}
)  # fmt: skip


class ObjectKind(IntEnum):
    CERTIFICATE = 1
    PUBLIC_KEY = 2
    PRIVATE_KEY = 3
    CA_CERTIFICATE = 4


@dataclass(frozen=True)
class TokenSpec:
    """One of the two tokens of a card: its PIN, labels and IDs (as OpenSC's JPKI mapping)."""

    key: KeySlot
    label: str
    slot_label: str
    key_id: bytes
    ca_id: bytes
    certificate_label: str
    key_label: str
    ca_label: str


AUTH_TOKEN = TokenSpec(
    AUTH_KEY, "JPKI (User Authentication PIN)", "User Authentication", b"\x01", b"\x03",
    "User Authentication Certificate", "User Authentication Key",
    "User Authentication Certificate CA",
)  # fmt: skip
SIGN_TOKEN = TokenSpec(
    SIGN_KEY, "JPKI (Digital Signature PIN)", "Digital Signature", b"\x02", b"\x04",
    "Digital Signature Certificate", "Digital Signature Key", "Digital Signature Certificate CA",
)  # fmt: skip
TOKENS = (AUTH_TOKEN, SIGN_TOKEN)


@dataclass(frozen=True)
class TokenObject:
    """An object of a token: its handle, whether it needs a login to be seen, its attributes
    (values typed as they travel: ints for booleans and CK_ULONGs, bytes otherwise)."""

    handle: int
    private: bool
    attributes: dict[int, Value]
    sensitive: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Slot:
    """One slot as the reader and card are now."""

    id: int
    reader: str
    spec: TokenSpec
    live: LiveCard | None  #: the card, when this slot has a token
    #: The key is found and used without C_Login: the daemon asks for the PIN at each
    #: signature, after the application has chosen a mechanism it can have.
    login_free: bool = False

    @property
    def present(self) -> bool:
        return self.live is not None

    @property
    def card(self) -> CardRef | None:
        return self.live.ref if self.live is not None else None

    @property
    def description(self) -> str:
        return f"{self.reader} ({self.spec.slot_label})"

    def serial(self) -> str:
        record = self.live.record if self.live else None
        return record.card_id[:16] if record else ""

    def token_flags(self) -> int:
        flags = (
            CKF_TOKEN_INITIALIZED | CKF_WRITE_PROTECTED | CKF_USER_PIN_INITIALIZED
            | CKF_PROTECTED_AUTHENTICATION_PATH
        )  # fmt: skip
        if not self.login_free:
            flags |= CKF_LOGIN_REQUIRED
        record = self.live.record if self.live else None
        tries = record.pin_tries.get(self.spec.key.name, -1) if record else -1
        if tries == 0:
            flags |= CKF_USER_PIN_LOCKED
        elif tries == 1:
            flags |= CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_COUNT_LOW
        elif 0 < tries < self.spec.key.pin.max_tries:
            flags |= CKF_USER_PIN_COUNT_LOW
        return flags

    def key_info(self) -> KeyInfo | None:
        """The key's algorithm: from its certificate, or for the signing key before that is
        read, from the authentication certificate (both keys of a card are alike). Only the
        authentication key signs SHA-1 (legacy)."""
        if self.live is None or self.live.snapshot is None:
            return None
        der = self.certificate() or self.live.snapshot.auth_der
        legacy = self.spec.key is AUTH_KEY
        return KeyInfo.from_certificate(der, legacy) if der else None

    def certificate(self) -> bytes | None:
        """The token's own certificate, when known (the signing one only once read)."""
        if self.live is None or self.live.snapshot is None:
            return None
        if self.spec.key is AUTH_KEY:
            return self.live.snapshot.auth_der
        return self.live.sign_der

    def ca_certificate(self) -> bytes | None:
        if self.live is None or self.live.snapshot is None:
            return None
        snapshot = self.live.snapshot
        return snapshot.auth_ca_der if self.spec.key is AUTH_KEY else snapshot.sign_ca_der

    def objects(self, logged_in: bool) -> list[TokenObject]:
        """The objects a session sees: public ones, and private ones after C_Login."""
        if self.live is None:
            return []
        found: list[TokenObject] = []
        ca = self.ca_certificate()
        if ca is not None:
            found.append(self._certificate(ObjectKind.CA_CERTIFICATE, ca, self.spec.ca_label,
                                           self.spec.ca_id, authority=True))  # fmt: skip
        # The signing certificate and everything derived from it: only after C_Login.
        private = self.spec.key is SIGN_KEY
        cert = self.certificate()
        if cert is not None and (logged_in or not private):
            found.append(self._certificate(ObjectKind.CERTIFICATE, cert,
                                           self.spec.certificate_label, self.spec.key_id,
                                           authority=False, private=private))  # fmt: skip
            found.append(self._public_key(cert, private))
            if logged_in or self.login_free:
                found.append(self._private_key(cert))
        return found

    def object(self, handle: int, logged_in: bool) -> TokenObject | None:
        return next((o for o in self.objects(logged_in) if o.handle == handle), None)

    # -- the objects ---------------------------------------------------------------------

    def _handle(self, kind: ObjectKind) -> int:
        return self.id * HANDLES_PER_SLOT + kind

    def _common(self, kind: ObjectKind, klass: CKO, label: str, private: bool) -> dict:
        return {
            CKA.CLASS: klass,
            CKA.TOKEN: 1,
            CKA.PRIVATE: int(private),
            CKA.MODIFIABLE: 0,
            CKA.COPYABLE: 0,
            CKA.DESTROYABLE: b"\x00",  # a byte array on p11-kit's wire
            CKA.LABEL: label.encode(),
        }

    def _certificate(
        self,
        kind: ObjectKind,
        der: bytes,
        label: str,
        key_id: bytes,
        authority: bool,
        private: bool = False,
    ) -> TokenObject:
        cert = certificates.load(der)
        attributes = self._common(kind, CKO.CERTIFICATE, label, private)
        attributes.update({
            CKA.ID: key_id,
            CKA.CERTIFICATE_TYPE: CKC_X_509,
            CKA.TRUSTED: 0,
            CKA.CERTIFICATE_CATEGORY: (
                CK_CERTIFICATE_CATEGORY_AUTHORITY if authority
                else CK_CERTIFICATE_CATEGORY_TOKEN_USER
            ),
            CKA.CHECK_VALUE: hashlib.sha1(der).digest()[:3],
            CKA.START_DATE: _date(cert.not_valid_before_utc),
            CKA.END_DATE: _date(cert.not_valid_after_utc),
            CKA.SUBJECT: cert.subject.public_bytes(),
            CKA.ISSUER: cert.issuer.public_bytes(),
            CKA.SERIAL_NUMBER: _der_integer(cert.serial_number),
            CKA.VALUE: der,
            CKA.PUBLIC_KEY_INFO: _spki(cert),
        })  # fmt: skip
        return TokenObject(self._handle(kind), private, attributes)

    def _key_attributes(self, cert: x509.Certificate) -> dict[int, Value]:
        key = certificates.public_key(cert)
        attributes: dict[int, Value] = {
            CKA.ID: self.spec.key_id,
            CKA.SUBJECT: cert.subject.public_bytes(),
            CKA.LOCAL: 0,
            CKA.KEY_GEN_MECHANISM: UNAVAILABLE,
            CKA.DERIVE: 0,
            CKA.START_DATE: _date(cert.not_valid_before_utc),
            CKA.END_DATE: _date(cert.not_valid_after_utc),
            CKA.PUBLIC_KEY_INFO: _spki(cert),
        }
        if isinstance(key, rsa.RSAPublicKey):
            numbers = key.public_numbers()
            attributes.update({
                CKA.KEY_TYPE: CKK.RSA,
                CKA.MODULUS: _unsigned(numbers.n),
                CKA.MODULUS_BITS: key.key_size,
                CKA.PUBLIC_EXPONENT: _unsigned(numbers.e),
            })  # fmt: skip
        elif isinstance(key, ec.EllipticCurvePublicKey):
            point = key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            attributes.update({
                CKA.KEY_TYPE: CKK.EC,
                CKA.EC_PARAMS: _named_curve(key.curve),
                CKA.EC_POINT: _der_octet_string(point),
            })  # fmt: skip
        return attributes

    def _public_key(self, der: bytes, private: bool) -> TokenObject:
        cert = certificates.load(der)
        attributes = self._common(ObjectKind.PUBLIC_KEY, CKO.PUBLIC_KEY, self.spec.key_label,
                                  private)  # fmt: skip
        attributes.update(self._key_attributes(cert))
        attributes.update({
            CKA.ENCRYPT: 0, CKA.VERIFY: 1, CKA.VERIFY_RECOVER: 0, CKA.WRAP: 0, CKA.TRUSTED: 0,
        })  # fmt: skip
        return TokenObject(self._handle(ObjectKind.PUBLIC_KEY), private, attributes)

    def _private_key(self, der: bytes) -> TokenObject:
        cert = certificates.load(der)
        attributes = self._common(ObjectKind.PRIVATE_KEY, CKO.PRIVATE_KEY, self.spec.key_label,
                                  not self.login_free)  # fmt: skip
        attributes.update(self._key_attributes(cert))
        attributes.update({
            CKA.SENSITIVE: 1,
            CKA.DECRYPT: 0,
            CKA.SIGN: 1,
            CKA.SIGN_RECOVER: 0,
            CKA.UNWRAP: 0,
            CKA.EXTRACTABLE: 0,
            CKA.ALWAYS_SENSITIVE: 1,
            CKA.NEVER_EXTRACTABLE: 1,
            CKA.WRAP_WITH_TRUSTED: 0,
            CKA.ALWAYS_AUTHENTICATE: int(self.spec.key is SIGN_KEY),
        })  # fmt: skip
        return TokenObject(
            self._handle(ObjectKind.PRIVATE_KEY), not self.login_free, attributes, SENSITIVE
        )


class SlotTable:
    """Slot ids for readers, stable for the daemon's life: a reader keeps its slots when it
    comes back. ``keys``: the tokens shown (by key name); a view shows some of them under the
    same slot ids. ``login_free``: the keys used without C_Login (see :class:`Slot`)."""

    def __init__(
        self,
        manager: CardManager,
        keys: frozenset[str] = frozenset(spec.key.name for spec in TOKENS),
        readers: dict[str, int] | None = None,
        login_free: frozenset[str] = frozenset(),
    ) -> None:
        self.manager = manager
        self.keys = keys
        self.login_free = login_free
        self._readers: dict[str, int] = {} if readers is None else readers

    def view(self, keys: frozenset[str], login_free: frozenset[str] = frozenset()) -> SlotTable:
        """The same slots, showing only the tokens of ``keys``."""
        return SlotTable(self.manager, keys, self._readers, login_free)

    def shows(self, slot_id: int) -> bool:
        """Whether a slot of this id (present or not, even of a reader gone) is in this view."""
        return TOKENS[slot_id % SLOTS_PER_READER].key.name in self.keys

    def slots(self) -> list[Slot]:
        """Every slot of every reader pcscd knows now, in reader order."""
        found = []
        for reader in self.manager.readers:
            index = self._readers.setdefault(reader, len(self._readers))
            live = self._usable(reader)
            for n, spec in enumerate(TOKENS):
                if spec.key.name not in self.keys:
                    continue
                present = live is not None and (
                    spec.key is AUTH_KEY or bool(live.snapshot and live.snapshot.sign_present)
                )
                found.append(Slot(index * SLOTS_PER_READER + n, reader, spec,
                                  live if present else None,
                                  spec.key.name in self.login_free))  # fmt: skip
        return found

    def slot(self, slot_id: int) -> Slot | None:
        return next((s for s in self.slots() if s.id == slot_id), None)

    def _usable(self, reader: str) -> LiveCard | None:
        """The card in ``reader`` when it is a My Number Card that has been read."""
        live = self.manager.cards.get(reader)
        if live is None or live.snapshot is None or live.error:
            return None
        if live.snapshot.token.kind.value not in ("card", "unknown"):
            return None
        return live


def slot_of_handle(handle: int) -> int:
    return handle // HANDLES_PER_SLOT


def _date(when: dt.datetime) -> bytes:
    """A CK_DATE (YYYYMMDD) of Japan's calendar."""
    return when.astimezone(JAPAN).strftime("%Y%m%d").encode()


def _unsigned(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = _unsigned(n)
    return bytes([0x80 | len(raw)]) + raw


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True)
    return b"\x02" + _der_length(len(raw)) + raw


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


_CURVE_OIDS = {
    "secp256r1": "1.2.840.10045.3.1.7",
    "secp384r1": "1.3.132.0.34",
    "secp521r1": "1.3.132.0.35",
}


def _named_curve(curve: ec.EllipticCurve) -> bytes:
    """DER of the curve's OBJECT IDENTIFIER (CKA_EC_PARAMS)."""
    parts = [int(p) for p in _CURVE_OIDS[curve.name].split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return b"\x06" + _der_length(len(body)) + bytes(body)


def _spki(cert: x509.Certificate) -> bytes:
    return certificates.public_key(cert).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
