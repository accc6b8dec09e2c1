"""J-LIS's CA certificates (the trust anchors of JPKI), bundled in ``anchors/``.

Each bundled file is checked against the SHA-256 fingerprint J-LIS publishes for it before it is
used: a file changed on disk is refused, never trusted. Generations overlap (a 2019 card chains
to the 2019 CA until 2029), so a verifier tries every anchor of the right purpose.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

#: The bundled anchors and their SHA-256 fingerprints as J-LIS publishes them.
PUBLISHED_FINGERPRINTS: dict[str, str] = {
    "sign-ca-2015.pem": "19645405A1FE14377434BD55957628AC4038557C542403A2243F21C706FC9355",
    "sign-ca-2019.pem": "79679C33E4CC9319440F1AD120A597FF1844E2EF217063ADB176966FD5E6FBEB",
    "sign-ca-2023.pem": "D227F6CDE11D35C5252178F106F843D24651944975413B539FA2FB68DBFA365F",
    "auth-ca-2015.pem": "4DCFC4CA0AAF9FB2A3081B3F0C991C320B3ACC008667A341EEAEC5AF1D58CA7D",
    "auth-ca-2023.pem": "64114F29620C24ED2631D46476A040E7EE740D956089C00B036A6A8118C322B5",
}


class AnchorError(ValueError):
    """A bundled anchor is missing or does not match J-LIS's published fingerprint."""


@dataclass(frozen=True)
class Anchor:
    """One J-LIS CA certificate."""

    file: str
    purpose: str  #: ``sign`` or ``auth``
    generation: int  #: the year the CA was set up
    der: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest().upper()


def check_fingerprint(file: str, der: bytes) -> None:
    """Raise :class:`AnchorError` unless ``der`` is the certificate J-LIS published as ``file``."""
    expected = PUBLISHED_FINGERPRINTS.get(file)
    if expected is None:
        raise AnchorError(f"{file} is not a J-LIS anchor")
    if hashlib.sha256(der).hexdigest().upper() != expected:
        raise AnchorError(f"{file} does not match J-LIS's published SHA-256 fingerprint")


@cache
def jlis_anchors() -> tuple[Anchor, ...]:
    """Every bundled J-LIS CA certificate, each checked against its published fingerprint."""
    folder = resources.files("mncd.jpki").joinpath("anchors")
    anchors = []
    for file in sorted(PUBLISHED_FINGERPRINTS):
        try:
            pem = folder.joinpath(file).read_bytes()
            der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        except (OSError, ValueError) as exc:
            raise AnchorError(f"the bundled anchor {file} cannot be read") from exc
        check_fingerprint(file, der)
        purpose, _, year = file.removesuffix(".pem").split("-")
        anchors.append(Anchor(file, purpose, int(year), der))
    return tuple(anchors)


def anchors_for(purpose: str) -> tuple[Anchor, ...]:
    """The anchors of the signing (``sign``) or user-authentication (``auth``) CA."""
    return tuple(anchor for anchor in jlis_anchors() if anchor.purpose == purpose)
