"""What the card is asked to sign, and checking its answer against the certificate.

The key algorithm comes from the certificate's public key: RSA keys get a DER DigestInfo (the
card adds PKCS#1 v1.5 padding); EC keys (the provisional next-generation profile) get the bare
digest and answer a DER ECDSA signature. A signature is verified before it is handed to anyone.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mncd.card.digestinfo import digest_info, digest_size
from mncd.jpki import certificates
from mncd.jpki.errors import SignatureMismatch

_HASHES = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
    "sha1": hashes.SHA1(),  # legacy: the user-authentication key through PKCS#11 only
}


def card_input(cert_der: bytes, hash_name: str, digest: bytes) -> bytes:
    """The bytes to send with COMPUTE DIGITAL SIGNATURE for this certificate's key.

    Raises :class:`~mncd.jpki.certificates.CertificateError` when ``cert_der`` is not a
    certificate (a card can answer anything when the signing certificate is read)."""
    if len(digest) != digest_size(hash_name):
        raise ValueError(f"a {hash_name} digest is {digest_size(hash_name)} bytes long")
    key = certificates.public_key(certificates.load(cert_der))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return digest
    return digest_info(hash_name, digest)


def verify(cert_der: bytes, signature: bytes, hash_name: str, digest: bytes) -> None:
    """Raise :class:`SignatureMismatch` unless ``signature`` over ``digest`` verifies."""
    key = certificates.public_key(certificates.load(cert_der))
    algorithm = Prehashed(_HASHES[hash_name])
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(algorithm))
        else:
            raise SignatureMismatch("unsupported key type")
    except (InvalidSignature, ValueError) as exc:
        raise SignatureMismatch("the card's signature does not verify") from exc
