"""A test PKI with the JPKI certificate profile, for virtual cards only.

Separate CAs for user authentication and for signing (as J-LIS runs them), end-entity keys
RSA-2048 (or ECDSA P-384 for the provisional next-generation profile), and the signing
certificate's subjectAltName otherName entries carrying name, sex, birth date and address.
The CA names say plainly that they are test CAs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..jpki.certificates import (
    OID_JPKI_ADDRESS,
    OID_JPKI_BIRTH_DATE,
    OID_JPKI_NAME,
    OID_JPKI_SEX,
    OID_POLICY_AUTH,
    OID_POLICY_SIGN,
    encode_birth_date,
    encode_personal_value,
    sex_code_for_certificate,
)
from .profile import CardProfile

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
TEST_ORG = "JPKI"
TEST_MARK = "mncd virtual card - test only"
AUTH_CA = "JPKI for user authentication"
SIGN_CA = "JPKI for digital signature"


@dataclass(frozen=True)
class CardPki:
    """Keys and DER certificates for one virtual card."""

    auth_key: PrivateKey
    sign_key: PrivateKey
    auth_certificate: bytes
    auth_ca_certificate: bytes
    sign_certificate: bytes
    sign_ca_certificate: bytes


def new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()


def _ca_name(purpose: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, TEST_MARK),
        ]
    )


@lru_cache(maxsize=4)
def _ca(purpose: str, algorithm: str) -> tuple[PrivateKey, bytes]:
    """A CA key and self-signed certificate, shared by every card of this process."""
    key = new_key(algorithm)
    name = _ca_name(purpose)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3650))
        .not_valid_after(now + dt.timedelta(days=7300))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _hash_for(key))
    )
    return key, cert.public_bytes(serialization.Encoding.DER)


def _end_entity(
    subject: x509.Name,
    key: PrivateKey,
    ca: tuple[PrivateKey, bytes],
    validity: tuple[dt.datetime, dt.datetime],
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> bytes:
    ca_key, ca_der = ca
    ca_cert = x509.load_der_x509_certificate(ca_der)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.DER)


def _policy(oid: x509.ObjectIdentifier) -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(oid, None)])


def _holder_serial() -> str:
    """A random subject CN like the opaque one J-LIS puts into the certificates."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(24))


def generate(profile: CardProfile) -> CardPki:
    """Keys and certificates for ``profile`` (CA keys are reused within the process)."""
    auth_key = new_key(profile.algorithm)
    auth_cert = _auth_certificate(profile, auth_key)
    sign_key = new_key(profile.algorithm)
    return CardPki(
        auth_key=auth_key,
        sign_key=sign_key,
        auth_certificate=auth_cert,
        auth_ca_certificate=_ca(AUTH_CA, profile.algorithm)[1],
        sign_certificate=_sign_certificate(profile, sign_key),
        sign_ca_certificate=_ca(SIGN_CA, profile.algorithm)[1],
    )


def renew_signing_certificate(profile: CardProfile, current: CardPki) -> CardPki:
    """The same card after the office issued a new signing certificate (e.g. after a move)."""
    sign_key = new_key(profile.algorithm)
    return dataclasses.replace(
        current, sign_key=sign_key, sign_certificate=_sign_certificate(profile, sign_key)
    )


def _holder_name(*localities: str) -> x509.Name:
    """C=JP, the localities (prefecture, city: signing certificates only), CN=opaque id."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            *(x509.NameAttribute(NameOID.LOCALITY_NAME, place) for place in localities),
            x509.NameAttribute(NameOID.COMMON_NAME, _holder_serial()),
        ]
    )


def _auth_certificate(profile: CardProfile, key: PrivateKey) -> bytes:
    auth_usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    return _end_entity(
        _holder_name(),
        key,
        _ca(AUTH_CA, profile.algorithm),
        profile.validity(),
        [(auth_usage, True), (_policy(OID_POLICY_AUTH), False)],
    )


def _sign_certificate(profile: CardProfile, key: PrivateKey) -> bytes:
    signature_usage = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
    name, address, birth_date, sex = profile.certificate_personal_data()
    san = x509.SubjectAlternativeName(
        [
            x509.OtherName(OID_JPKI_NAME, encode_personal_value(name)),
            x509.OtherName(OID_JPKI_SEX, encode_personal_value(sex_code_for_certificate(sex))),
            x509.OtherName(
                OID_JPKI_BIRTH_DATE, encode_personal_value(encode_birth_date(birth_date))
            ),
            x509.OtherName(OID_JPKI_ADDRESS, encode_personal_value(address)),
        ]
    )
    return _end_entity(
        _holder_name("Tokyo-to", "Chiyoda-ku"),
        key,
        _ca(SIGN_CA, profile.algorithm),
        profile.validity(),
        [(signature_usage, True), (_policy(OID_POLICY_SIGN), False), (san, False)],
    )
