"""One card signature per document: a pyHanko signer whose key is the My Number Card.

pyHanko builds the document and its CMS around the signing certificate, which the card gives out
only after the signing password. So the whole build runs inside the daemon's ``digest-from``
call-back (:meth:`mncd.client.MyNumberCard.sign_document`): the certificate arrives, pyHanko
prepares the document, :meth:`CardSigner.async_sign_raw` hands the digest to the daemon and waits
for the card's signature. pyHanko's size estimate (``dry_run``) gets a placeholder and never
reaches the card, so a document costs one VERIFY and one signature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import algos
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from mncd.client import MyNumberCard, Status
from mncd.documents.errors import CertificateUnusable, DocumentError
from mncd.documents.text import N_, _, japan_date
from mncd.jpki import calendar, certificates
from mncd.jpki.summary import generation_for

T = TypeVar("T")

#: Japan's time zone: signing times (/M, signingTime) are written in it.
JST = dt.timezone(dt.timedelta(hours=9), "JST")


def now_in_japan() -> dt.datetime:
    """The current time in Japan, to the second."""
    return dt.datetime.now(JST).replace(microsecond=0)


@dataclass(frozen=True)
class CertificateCheck:
    """What the signing certificate's dates say: usable, and a warning when renewal is open."""

    warning: str = ""


def renewal_warning(not_after: dt.datetime) -> str:
    return _(
        "the signing certificate expires on {date}: renew it at your municipal office (bring "
        "your My Number Card)"
    ).format(date=japan_date(not_after))


def expired_text(not_after: dt.datetime | None) -> str:
    if not_after is None:
        return _(
            "The signing certificate has expired: documents signed with it are not accepted. "
            "Get a new one issued at your municipal office (bring your My Number Card)."
        )
    return _(
        "The signing certificate expired on {date}: documents signed with it are not accepted. "
        "Get a new one issued at your municipal office (bring your My Number Card)."
    ).format(date=japan_date(not_after))


INVALIDATED_TEXT = N_(
    "The signing certificate has been invalidated (revoked): its personal data no longer match "
    "the card, or the card refuses its key. Get a new one issued at your municipal office "
    "(bring your My Number Card)."
)


def check_status(status: Status) -> CertificateCheck:
    """Refuse, before any PIN is asked, a signing certificate the daemon knows is expired or
    invalidated and is the one on the card (:class:`CertificateUnusable`); warn when it is in
    its renewal window.

    An invalidated certificate the daemon has not read from the card since it was inserted may
    have been replaced at the office: the password is asked, the card gives its certificate,
    and :func:`check_certificate` refuses it if it is still the invalidated one."""
    sign = status.sign
    if sign.state == "invalidated" and sign.certificate_held:
        raise CertificateUnusable("invalidated", _(INVALIDATED_TEXT))
    if sign.state == "invalidated":
        return CertificateCheck(
            _(
                "The signing certificate mncd read last is invalidated; if your municipal "
                "office has issued a new one, it is read from the card after your password."
            )
        )
    if sign.state == "expired":
        raise CertificateUnusable("expired", expired_text(sign.not_after))
    if sign.state == "expiring" and sign.not_after is not None:
        return CertificateCheck(renewal_warning(sign.not_after))
    return CertificateCheck()


def check_certificate(der: bytes, now: dt.datetime, invalidated: str = "") -> CertificateCheck:
    """The same for the certificate itself, as the card gave it (``now``: the signing time;
    ``invalidated``: the fingerprint of the certificate the daemon knows is invalidated)."""
    try:
        summary = certificates.summarize(der)
    except certificates.CertificateError as exc:
        raise DocumentError(
            _("The signing certificate from the card cannot be read: nothing was signed.")
        ) from exc
    if invalidated and summary.fingerprint == invalidated:
        raise CertificateUnusable("invalidated", _(INVALIDATED_TEXT))
    months = generation_for(summary.algorithm).renewal_months
    state = calendar.state(summary.not_after, months, now)
    if state == calendar.EXPIRED:
        raise CertificateUnusable("expired", expired_text(summary.not_after))
    if now < summary.not_before:
        raise CertificateUnusable(
            "not-yet-valid",
            _("The signing certificate is not valid yet: check your computer's clock."),
        )
    if state == calendar.EXPIRING:
        return CertificateCheck(renewal_warning(summary.not_after))
    return CertificateCheck()


def holder_name(der: bytes) -> str:
    """The holder's name as the signing certificate carries it."""
    try:
        return certificates.personal_data(der).name
    except certificates.CertificateError as exc:
        raise DocumentError(
            _("The signing certificate carries no holder name: give one with --name.")
        ) from exc


def _placeholder_size(der: bytes) -> int:
    """Bytes a signature by this certificate's key can take (for pyHanko's size estimate)."""
    key = certificates.public_key(certificates.load(der))
    if isinstance(key, rsa.RSAPublicKey):
        return (key.key_size + 7) // 8
    if isinstance(key, ec.EllipticCurvePublicKey):
        return 2 * ((key.curve.key_size + 7) // 8) + 9  # DER SEQUENCE of two INTEGERs
    raise DocumentError(_("The signing certificate's key type is not supported."))


class CardSigner(Signer):
    """A pyHanko signer that asks the card for exactly one signature."""

    def __init__(self, certificate: bytes, ca_certificate: bytes | None) -> None:
        cert = asn1_x509.Certificate.load(certificate)
        chain = [asn1_x509.Certificate.load(ca_certificate)] if ca_certificate else []
        mechanism = None
        if cert.public_key.algorithm == "rsa":
            # PKCS#1 v1.5, as the card pads (and as the ministry's rules ask).
            mechanism = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
        super().__init__(
            signing_cert=cert,
            cert_registry=SimpleCertificateStore.from_certs(chain),
            signature_mechanism=mechanism,
        )
        self.certificate = certificate
        self._size = _placeholder_size(certificate)
        loop = asyncio.get_running_loop()
        #: The digest the card is to sign (set once, by the real signing call).
        self.digest: asyncio.Future[bytes] = loop.create_future()
        #: The card's signature over it.
        self.signature: asyncio.Future[bytes] = loop.create_future()

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        if dry_run:  # pyHanko's size estimate: never the card
            return bytes(self._size)
        if self.digest.done():
            raise DocumentError(_("A document is signed by the card only once."))
        if digest_algorithm != "sha256":
            raise DocumentError(
                _("Documents are signed with SHA-256, not {algorithm}.").format(
                    algorithm=digest_algorithm
                )
            )
        self.digest.set_result(hashlib.sha256(data).digest())
        return await self.signature


@dataclass(frozen=True)
class PinOptions:
    """How the daemon gets the signing password: None asks the user in its own dialog."""

    pin: str | None = None
    allow_last_try: bool = False
    interactive: bool | None = None


async def sign_once(
    card: MyNumberCard,
    build: Callable[[CardSigner], Awaitable[T]],
    pin: PinOptions,
    now: dt.datetime,
) -> tuple[T, bytes, CertificateCheck]:
    """Run ``build(signer)`` (pyHanko making a document) around one card signature.

    Returns what ``build`` returned, the signing certificate and its check. The certificate is
    checked (expired: :class:`CertificateUnusable`) before anything is signed.
    """
    status = await card.get_status()
    check_status(status)
    invalidated = status.sign.fingerprint if status.sign.state == "invalidated" else ""
    try:
        ca = await card.get_certificate("sign-ca")
    except Exception:  # an older record without the CA: the document still names the signer
        ca = None
    made: dict[str, object] = {}

    async def digest_for(certificate: bytes) -> bytes:
        made["check"] = check_certificate(certificate, now, invalidated)
        signer = CardSigner(certificate, ca)
        task = asyncio.ensure_future(build(signer))
        made["signer"], made["task"] = signer, task
        await asyncio.wait({signer.digest, task}, return_when=asyncio.FIRST_COMPLETED)
        if not signer.digest.done():
            task.result()  # the build's own error
            raise DocumentError(_("The document asked for no signature; nothing was signed."))
        return signer.digest.result()

    try:
        signed = await card.sign_document(
            digest_for, "sha256", pin=pin.pin, interactive=pin.interactive,
            allow_last_try=pin.allow_last_try,
        )  # fmt: skip
    except BaseException:
        task = made.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
            with suppress(BaseException):
                await task
        raise
    signer = made["signer"]
    task = made["task"]
    assert isinstance(signer, CardSigner) and isinstance(task, asyncio.Future)
    signer.signature.set_result(signed.signature)
    result = await task
    check = made["check"]
    assert isinstance(check, CertificateCheck)
    return result, signed.certificate, check
