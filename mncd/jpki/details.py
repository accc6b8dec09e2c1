"""A certificate described for people: names, validity in Japan's calendar, key, fingerprint.

JPKI certificates end at 23:59:59 in Japan (14:59:59 UTC), so dates and days left are counted in
Japan's calendar (UTC+9 all year: Japan has no daylight saving time), whatever the local zone.
Personal data (the signing certificate's subject localities and subjectAltName) are described
separately, by :func:`personal_data`, for callers that may show them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mncd.jpki import calendar
from mncd.jpki.certificates import (
    CertificateError,
    PersonalData,
    key_algorithm,
    load,
    public_key,
)
from mncd.jpki.certificates import personal_data as read_personal_data

#: Key usage bits as RFC 5280 names them, in its order.
_KEY_USAGES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)
#: Sex as the signing certificate codes it (1, 2, 3).
SEX_NAMES = {"1": "male", "2": "female", "3": "not known"}


def japan_days_left(not_after: dt.datetime, now: dt.datetime | None = None) -> int:
    """Calendar days in Japan from today to the last valid day (0: it ends today)."""
    return calendar.days_left(not_after, now or dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class CertificateDetails:
    """What ``mncctl cert show`` tells about a certificate (no personal data)."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str  #: hex, as GetStatus gives it
    fingerprint: str  #: SHA-256 of the DER, lower-case hex
    algorithm: str  #: rsa2048, ec-p384, ...
    key: str  #: "RSA 2048 bits", "ECDSA P-384"
    key_usage: tuple[str, ...]
    ca: bool

    def days_left(self, now: dt.datetime | None = None) -> int:
        return japan_days_left(self.not_after, now)


def _key_text(cert: x509.Certificate) -> str:
    key = public_key(cert)
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curve.get(key.curve.name, key.curve.name)}"
    return "unknown"


def _key_usage(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(name for attr, name in _KEY_USAGES if getattr(usage, attr))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def describe(der: bytes) -> CertificateDetails:
    """The details of a DER certificate, or :class:`CertificateError`."""
    cert = load(der)
    try:
        return CertificateDetails(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial=f"{cert.serial_number:x}",
            fingerprint=hashlib.sha256(der).hexdigest(),
            algorithm=key_algorithm(cert),
            key=_key_text(cert),
            key_usage=_key_usage(cert),
            ca=_is_ca(cert),
        )
    except ValueError as exc:  # extensions are parsed on first use
        raise CertificateError("the certificate is malformed") from exc


@dataclass(frozen=True)
class PersonalDetails:
    """The signing certificate's personal data, to be shown to its holder only."""

    name: str
    address: str
    birth_date: dt.date | None  #: None when the certificate's form is not understood
    sex: str  #: male, female or not known

    def __repr__(self) -> str:  # never print personal data by accident
        return "PersonalDetails(<personal data>)"


def personal_data(der: bytes) -> PersonalDetails:
    """Name, address, birth date and sex from a signing certificate (CertificateError if it
    has none)."""
    data: PersonalData = read_personal_data(der)
    try:
        birth: dt.date | None = dt.datetime.strptime(data.gregorian_birth_date, "%Y%m%d").date()
    except ValueError:
        birth = None
    return PersonalDetails(
        name=data.name,
        address=data.address,
        birth_date=birth,
        sex=SEX_NAMES.get(data.sex, "not known"),
    )
