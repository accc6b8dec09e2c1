"""What the card's keys sign through PKCS#11, and turning the caller's input into a digest.

RSA keys (today's card): CKM_RSA_PKCS takes a DER DigestInfo chosen by the application (TLS 1.2,
NSS, OpenSSH), CKM_SHA{256,384,512}_RSA_PKCS hash on the host. The user-authentication key also
signs SHA-1 (a DigestInfo, or CKM_SHA1_RSA_PKCS) as legacy, for ssh-rsa and TLS 1.2 peers; the
signing key does not. EC keys (the provisional next-generation profile): CKM_ECDSA takes the
digest, CKM_ECDSA_SHA{256,384,512} hash on the host; PKCS#11 wants the signature as r || s, the
card answers DER. No RSA-PSS: the card pads with PKCS#1 v1.5 itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mncd.card.digestinfo import HASHES, LEGACY_HASHES, digest_info, digest_size
from mncd.jpki import certificates
from mncd.pkcs11.constants import CKF_EC_F_P, CKF_EC_NAMEDCURVE, CKF_EC_UNCOMPRESS, CKF_HW, CKM
from mncd.pkcs11.constants import CKF_SIGN as CKF_SIGN_FLAG

#: Mechanism → the hash computed on the host (None: the caller hashed).
RSA_MECHANISMS: dict[int, str | None] = {
    CKM.RSA_PKCS: None,
    CKM.SHA256_RSA_PKCS: "sha256",
    CKM.SHA384_RSA_PKCS: "sha384",
    CKM.SHA512_RSA_PKCS: "sha512",
}
#: The user-authentication key's: SHA-1 too, as legacy.
LEGACY_RSA_MECHANISMS: dict[int, str | None] = {**RSA_MECHANISMS, CKM.SHA1_RSA_PKCS: "sha1"}
EC_MECHANISMS: dict[int, str | None] = {
    CKM.ECDSA: None,
    CKM.ECDSA_SHA256: "sha256",
    CKM.ECDSA_SHA384: "sha384",
    CKM.ECDSA_SHA512: "sha512",
}
#: RSA-PSS, which the card cannot make (TLS 1.3 client authentication needs it): refused
#: before any PIN is asked, and said so in the log.
RSA_PSS_MECHANISMS = frozenset(
    {CKM.RSA_PKCS_PSS, CKM.SHA1_RSA_PKCS_PSS, CKM.SHA256_RSA_PKCS_PSS, CKM.SHA384_RSA_PKCS_PSS,
     CKM.SHA512_RSA_PKCS_PSS}
)  # fmt: skip
#: Most bytes a mechanism without host hashing accepts (a DigestInfo of SHA-512 is 83).
MAX_PREHASHED = 512


class InputError(ValueError):
    """The data to sign does not fit the mechanism (``length``: its size is wrong)."""

    def __init__(self, text: str, length: bool = False) -> None:
        super().__init__(text)
        self.length = length


@dataclass(frozen=True)
class KeyInfo:
    """A card key as PKCS#11 describes it, from its certificate."""

    rsa: bool
    bits: int
    signature_length: int
    mechanisms: dict[int, str | None]
    #: The hashes it signs (a DigestInfo for CKM_RSA_PKCS names one of them).
    hashes: tuple[str, ...] = HASHES

    @classmethod
    def from_certificate(cls, der: bytes, legacy: bool = False) -> KeyInfo:
        """The key of this certificate; ``legacy``: RSA signs SHA-1 too."""
        key = certificates.public_key(certificates.load(der))
        if isinstance(key, rsa.RSAPublicKey):
            length = (key.key_size + 7) // 8
            if legacy:
                hashes = HASHES + LEGACY_HASHES
                return cls(True, key.key_size, length, LEGACY_RSA_MECHANISMS, hashes)
            return cls(True, key.key_size, length, RSA_MECHANISMS)
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            return cls(False, key.curve.key_size, 2 * size, EC_MECHANISMS)
        raise certificates.CertificateError("the certificate's key is neither RSA nor EC")

    def mechanism_info(self, mechanism: int) -> tuple[int, int, int] | None:
        """(min key size, max key size, flags) of a served mechanism; None if not served."""
        if mechanism not in self.mechanisms:
            return None
        flags = CKF_HW | CKF_SIGN_FLAG
        if not self.rsa:
            flags |= CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS
        return self.bits, self.bits, flags


class Signing:
    """One signing operation's input, single-part or in parts."""

    def __init__(self, mechanism: int, key: KeyInfo) -> None:
        self.mechanism = mechanism
        self.key = key
        self.host_hash = key.mechanisms[mechanism]
        self._hash = hashlib.new(self.host_hash) if self.host_hash else None
        self._data = bytearray()
        self.updated = False

    def update(self, data: bytes) -> None:
        self.updated = True
        if self._hash is not None:
            self._hash.update(data)
            return
        if len(self._data) + len(data) > MAX_PREHASHED:
            raise InputError("too much input for a mechanism that signs a digest", length=True)
        self._data += data

    def digest(self) -> tuple[str, bytes]:
        """The hash name and digest the card is to sign."""
        if self._hash is not None:
            assert self.host_hash is not None
            return self.host_hash, self._hash.digest()
        data = bytes(self._data)
        if self.key.rsa:
            return split_digest_info(data, self.key.hashes)
        for name in HASHES:
            if len(data) == digest_size(name):
                return name, data
        raise InputError("CKM_ECDSA signs a SHA-256, SHA-384 or SHA-512 digest", length=True)

    def answer(self, signature: bytes) -> bytes:
        """The card's signature as PKCS#11 returns it (ECDSA: r || s)."""
        if self.key.rsa:
            return signature
        r, s = decode_dss_signature(signature)
        size = self.key.signature_length // 2
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def split_digest_info(data: bytes, hashes: tuple[str, ...] = HASHES) -> tuple[str, bytes]:
    """The hash and digest of a DER DigestInfo for one of ``hashes`` (what CKM_RSA_PKCS gets)."""
    for name in hashes:
        size = digest_size(name)
        prefix = digest_info(name, bytes(size))[:-size]
        if len(data) == len(prefix) + size and data.startswith(prefix):
            return name, data[len(prefix) :]
    raise InputError(f"CKM_RSA_PKCS signs a DER DigestInfo of {', '.join(hashes)}")
