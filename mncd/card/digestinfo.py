"""DER DigestInfo (PKCS#1 v1.5, RFC 8017 §9.2) for the hashes the card signs with.

:data:`HASHES` are signed for every caller. SHA-1 (:data:`LEGACY_HASHES`) is known here for the
one caller that accepts it: PKCS#11 on the user-authentication key, for legacy peers (ssh-rsa,
TLS 1.2 servers); the signing key never signs it.
"""

from __future__ import annotations

import hashlib

# DER of DigestInfo up to the digest's OCTET STRING length byte; the digest follows.
_PREFIXES: dict[str, bytes] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
}

HASHES: tuple[str, ...] = ("sha256", "sha384", "sha512")
LEGACY_HASHES: tuple[str, ...] = ("sha1",)


def digest_size(hash_name: str) -> int:
    """Size in bytes of a supported hash's digest."""
    _check(hash_name)
    return hashlib.new(hash_name).digest_size


def digest(hash_name: str, data: bytes) -> bytes:
    """Hash ``data`` with a supported hash."""
    _check(hash_name)
    return hashlib.new(hash_name, data).digest()


def digest_info(hash_name: str, digest_value: bytes) -> bytes:
    """DER DigestInfo for ``digest_value`` computed with ``hash_name``."""
    if len(digest_value) != digest_size(hash_name):
        raise ValueError(f"a {hash_name} digest is {digest_size(hash_name)} bytes long")
    return _PREFIXES[hash_name] + digest_value


def parse_digest_info(data: bytes) -> tuple[str, bytes]:
    """The hash and digest of a DER DigestInfo of a known hash, exactly as :func:`digest_info`
    writes it (so the card signs the very bytes given); ValueError for anything else."""
    for hash_name, prefix in _PREFIXES.items():
        if data.startswith(prefix) and len(data) == len(prefix) + digest_size(hash_name):
            return hash_name, bytes(data[len(prefix) :])
    raise ValueError("not a DER DigestInfo of SHA-1, SHA-256, SHA-384 or SHA-512")


def _check(hash_name: str) -> None:
    if hash_name not in _PREFIXES:
        raise ValueError(f"unsupported hash {hash_name!r}; use one of {', '.join(HASHES)}")
