"""JPKI certificate profile: parsing (cryptography's X.509), the public summary of a certificate,
personal-data fields.

The summary (:class:`~mncd.jpki.summary.CertificateSummary`) is what status needs and may be kept
in clear. Personal data (name, address, birth date, sex) lives only in the signing certificate's
subjectAltName and is read from it here only to compare with what the card shows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mncd.jpki.errors import CertificateError
from mncd.jpki.summary import CertificateSummary

OID_JPKI_NAME = x509.ObjectIdentifier("1.2.392.200149.8.5.5.1")
OID_JPKI_NAME_SUBSTITUTE = x509.ObjectIdentifier("1.2.392.200149.8.5.5.2")
OID_JPKI_SEX = x509.ObjectIdentifier("1.2.392.200149.8.5.5.3")
OID_JPKI_BIRTH_DATE = x509.ObjectIdentifier("1.2.392.200149.8.5.5.4")
OID_JPKI_ADDRESS = x509.ObjectIdentifier("1.2.392.200149.8.5.5.5")
OID_JPKI_ADDRESS_SUBSTITUTE = x509.ObjectIdentifier("1.2.392.200149.8.5.5.6")


OID_POLICY_SIGN = x509.ObjectIdentifier("1.2.392.200149.8.5.1.1.20")
OID_POLICY_AUTH = x509.ObjectIdentifier("1.2.392.200149.8.5.1.3.30")

_UTF8_STRING = 0x0C
# Japanese eras as the certificate's birth-date field numbers them (first day of each era).
_ERAS = (
    (dt.date(2019, 5, 1), 5),  # 令和
    (dt.date(1989, 1, 8), 4),  # 平成
    (dt.date(1926, 12, 25), 3),  # 昭和
    (dt.date(1912, 7, 30), 2),  # 大正
    (dt.date(1868, 1, 25), 1),  # 明治
)
# Sex in the certificate: 1 male, 2 female, 3 not known; on the card: ISO 5218 (0, 1, 2, 9).
_CARD_SEX_TO_CERTIFICATE = {"1": "1", "2": "2", "0": "3", "9": "3"}
_STRING_TAGS = {0x0C, 0x13, 0x16, 0x1E}  # UTF8String, PrintableString, IA5String, BMPString


def encode_personal_value(text: str) -> bytes:
    """DER UTF8String for an otherName value."""
    raw = text.encode("utf-8")
    if len(raw) < 0x80:
        return bytes((_UTF8_STRING, len(raw))) + raw
    size = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes((_UTF8_STRING, 0x80 | len(size))) + size + raw


def encode_birth_date(day: dt.date) -> str:
    """The certificate's birth-date form: era digit, then the Gregorian date (EYYYYMMDD)."""
    era = next((number for start, number in _ERAS if day >= start), 0)
    return f"{era}{day:%Y%m%d}"


def sex_code_for_certificate(card_code: str) -> str:
    """The certificate's sex code for the card's ISO 5218 digit."""
    return _CARD_SEX_TO_CERTIFICATE.get(card_code, "3")


def decode_personal_value(der: bytes) -> str:
    """Text of a DER string (UTF8/Printable/IA5/BMP) from an otherName value."""
    if len(der) < 2 or der[0] not in _STRING_TAGS:
        raise CertificateError("personal-data field is not a string")
    first = der[1]
    if first < 0x80:
        start, length = 2, first
    else:
        count = first & 0x7F
        start = 2 + count
        length = int.from_bytes(der[2:start], "big")
    raw = der[start : start + length]
    if len(raw) != length:
        raise CertificateError("personal-data field is truncated")
    encoding = "utf-16-be" if der[0] == 0x1E else "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CertificateError("personal-data field is not valid text") from exc


def load(der: bytes) -> x509.Certificate:
    """Parse a DER certificate or raise :class:`CertificateError`."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError("not a DER X.509 certificate") from exc


def public_key(cert: x509.Certificate) -> CertificatePublicKeyTypes:
    """The certificate's public key, or :class:`CertificateError` for a broken or unknown one."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError("the certificate's public key is unusable") from exc


def key_algorithm(cert: x509.Certificate) -> str:
    """Short name of the certificate's public-key algorithm."""
    key = public_key(cert)
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}.get(
            key.curve.name, f"ec-{key.curve.name}"
        )
    return "unknown"


def summarize(der: bytes) -> CertificateSummary:
    """The public summary of a DER certificate."""
    cert = load(der)
    try:
        return CertificateSummary(
            serial=f"{cert.serial_number:x}",
            fingerprint=hashlib.sha256(der).hexdigest(),
            issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            algorithm=key_algorithm(cert),
        )
    except ValueError as exc:  # parts are parsed on first use
        raise CertificateError("the certificate is malformed") from exc


@dataclass(frozen=True)
class PersonalData:
    """Name, address, birth date (EYYYYMMDD) and sex (1, 2, 3) as a signing certificate has them."""

    name: str
    address: str
    birth_date: str
    sex: str

    @property
    def gregorian_birth_date(self) -> str:
        """The birth date as YYYYMMDD, without the era digit."""
        return self.birth_date[-8:]

    def __repr__(self) -> str:  # never print personal data by accident
        return "PersonalData(<personal data>)"


def _normalized(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def changed_fields(
    certificate: PersonalData, name: str, address: str, birth_date: dt.date, sex: str
) -> list[str]:
    """Kinds of personal data (name, address, birth_date, sex) that differ between the signing
    certificate and what the card shows now. Only the kinds are returned, never the values."""
    changed = []
    if _normalized(certificate.name) != _normalized(name):
        changed.append("name")
    if _normalized(certificate.address) != _normalized(address):
        changed.append("address")
    if certificate.gregorian_birth_date != f"{birth_date:%Y%m%d}":
        changed.append("birth_date")
    if certificate.sex != sex_code_for_certificate(sex):
        changed.append("sex")
    return changed


def personal_data(der: bytes) -> PersonalData:
    """Personal data from the signing certificate's subjectAltName otherName entries."""
    cert = load(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise CertificateError("certificate carries no personal data") from exc
    except ValueError as exc:  # the extensions are parsed lazily: a mangled one shows here
        raise CertificateError("certificate's personal data cannot be read") from exc
    values: dict[x509.ObjectIdentifier, str] = {}
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id in (OID_JPKI_NAME, OID_JPKI_ADDRESS, OID_JPKI_BIRTH_DATE, OID_JPKI_SEX):
            values[other.type_id] = decode_personal_value(other.value)
    try:
        return PersonalData(
            name=values[OID_JPKI_NAME],
            address=values[OID_JPKI_ADDRESS],
            birth_date=values[OID_JPKI_BIRTH_DATE],
            sex=values[OID_JPKI_SEX],
        )
    except KeyError as exc:
        raise CertificateError("certificate lacks a personal-data field") from exc


def check_issued_by(der: bytes, issuer_der: bytes) -> None:
    """Raise :class:`CertificateError` unless ``der`` is signed by the CA ``issuer_der``.

    A certificate read from the card is checked against the CA certificate on the same card, so
    a certificate damaged on its way (a faulty card or reader) is never passed on as genuine.
    """
    cert, issuer = load(der), load(issuer_der)
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError("the certificate is not signed by the card's CA") from exc
