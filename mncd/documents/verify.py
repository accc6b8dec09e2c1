"""Verifying signed PDFs and detached CMS signatures, anchored at J-LIS.

For a PDF every signature dictionary is checked, not only the first: its integrity (the CMS
digest over the ByteRange and the signature), what it covers (the last one the whole file, an
earlier one its own revision with only signatures or form filling after it), and that the
signer identifier names the certificate. Then the certificate: valid at the signing time,
keyUsage digitalSignature and nonRepudiation, issued by a CA (basicConstraints CA, keyCertSign)
that is one of J-LIS's bundled CAs (their fingerprints checked) or one given by the caller.
Revocation cannot be checked offline (J-LIS serves it to registered verifiers only); the report
says so.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import async_validate_detached_cms, async_validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from mncd.documents.errors import DocumentError
from mncd.documents.files import open_input, unreadable
from mncd.documents.signer import JST
from mncd.documents.text import N_, _, japan_date, ngettext
from mncd.jpki import certificates, trust

#: The msgid of :func:`revocation_note` (English).
REVOCATION_NOTE = N_(
    "Revocation was not checked: J-LIS gives revocation data only to registered verifiers, so "
    "an invalidated certificate cannot be recognised offline."
)
#: What a signing certificate must allow (real JPKI signing certificates carry both).
KEY_USAGE = KeyUsageConstraints(
    key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=True
)
#: Changes after an earlier signature that leave it standing: more signatures, form filling.
ALLOWED_LATER_CHANGES = (
    ModificationLevel.NONE,
    ModificationLevel.LTA_UPDATES,
    ModificationLevel.FORM_FILLING,
)


def revocation_note() -> str:
    """What a verification cannot tell offline, in the user's language."""
    return _(REVOCATION_NOTE)


class Verdict(enum.Enum):
    """The outcome for a signature or a whole file, worst last."""

    VALID = "valid"  #: intact and anchored
    UNTRUSTED = "untrusted"  #: intact, but the certificate does not chain to a known anchor
    INVALID = "invalid"  #: tampered, changed after signing, or a certificate rule broken


@dataclass(frozen=True)
class TrustAnchor:
    """A CA certificate verification may end at."""

    der: bytes
    description: str

    @classmethod
    def from_file(cls, path: Path) -> TrustAnchor:
        """A CA certificate given by the caller (PEM or DER)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise unreadable(path, exc) from exc
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            raise DocumentError(
                _("{path} is not a certificate: give a CA certificate in PEM or DER.").format(
                    path=path
                )
            ) from None
        description = _("the CA given with --ca ({path})").format(path=path)
        return cls(cert.public_bytes(serialization.Encoding.DER), description)


def jlis_trust_anchors() -> list[TrustAnchor]:
    """J-LIS's CAs, bundled with mncd and checked against the published fingerprints."""
    names = {
        "sign": N_("J-LIS signing CA ({generation})"),
        "auth": N_("J-LIS user-authentication CA ({generation})"),
    }
    return [
        TrustAnchor(anchor.der, _(names[anchor.purpose]).format(generation=anchor.generation))
        for anchor in trust.jlis_anchors()
    ]


@dataclass
class SignatureCheck:
    """One signature's result, in words a person reads."""

    label: str  #: the signature field's name, or the .p7s file
    signer: str = ""  #: the holder's name in the certificate (or its subject)
    signed_at: dt.datetime | None = None  #: as the signer's computer claims it
    covers: str = ""
    anchor: str = ""  #: which anchor the certificate chains to ("" when none)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    serial: str = ""
    issuer: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.problems:
            return Verdict.INVALID
        return Verdict.VALID if self.anchor else Verdict.UNTRUSTED


@dataclass
class Verification:
    """A file's result: every signature in it."""

    file: Path
    kind: str  #: pdf or cms
    signatures: list[SignatureCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  #: about the file as a whole

    @property
    def verdict(self) -> Verdict:
        if self.problems or not self.signatures:
            return Verdict.INVALID
        verdicts = {check.verdict for check in self.signatures}
        for worst in (Verdict.INVALID, Verdict.UNTRUSTED):
            if worst in verdicts:
                return worst
        return Verdict.VALID


# -- the certificate -----------------------------------------------------------------------------


def signer_name(der: bytes) -> str:
    """The holder's name from a JPKI signing certificate, else the certificate's subject."""
    try:
        return certificates.personal_data(der).name
    except certificates.CertificateError:
        try:
            return certificates.load(der).subject.rfc4514_string() or _("(no name)")
        except (certificates.CertificateError, ValueError):
            return _("(unreadable certificate)")


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    usage = _key_usage(cert)
    return constraints.ca and (usage is None or usage.key_cert_sign)


def _valid_at(cert: x509.Certificate, when: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


def check_certificate(
    check: SignatureCheck, der: bytes, when: dt.datetime, anchors: Iterable[TrustAnchor]
) -> None:
    """The certificate rules for a signature made at ``when``; adds problems, sets the anchor."""
    try:
        cert = certificates.load(der)
        cert.extensions  # noqa: B018  (parsed lazily: a mangled one shows here)
    except (certificates.CertificateError, ValueError):
        check.problems.append(_("the signer's certificate cannot be read"))
        return
    check.serial = f"{cert.serial_number:x}"
    check.issuer = cert.issuer.rfc4514_string()
    day = when.astimezone(JST).strftime("%Y-%m-%d %H:%M %Z")
    if not _valid_at(cert, when):
        check.problems.append(
            _(
                "the certificate was not valid at the signing time {time} (valid {start} to {end})"
            ).format(
                time=day,
                start=japan_date(cert.not_valid_before_utc),
                end=japan_date(cert.not_valid_after_utc),
            )
        )
    usage = _key_usage(cert)
    if usage is None or not (usage.digital_signature and usage.content_commitment):
        check.problems.append(
            _(
                "the certificate's keyUsage does not allow signing documents (it needs "
                "digitalSignature and nonRepudiation)"
            )
        )
    if _is_ca(cert):
        check.problems.append(_("the signer's certificate is a CA certificate"))
    for anchor in anchors:
        ca = x509.load_der_x509_certificate(anchor.der)
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if not _is_ca(ca):
            check.problems.append(
                _("{anchor} is not a CA (basicConstraints)").format(anchor=anchor.description)
            )
        elif not _valid_at(ca, when):
            check.problems.append(
                _("{anchor} was not valid at the signing time").format(anchor=anchor.description)
            )
        else:
            check.anchor = anchor.description
        return
    check.notes.append(
        _(
            "the certificate does not chain to a CA mncd knows: not one of J-LIS's bundled CAs "
            "(an unknown CA generation, or not a JPKI certificate) nor one given with --ca"
        )
    )


def _signer_identified(signer_info: cms.SignerInfo, cert: asn1_x509.Certificate) -> bool:
    """Whether the SignerInfo's sid names ``cert``."""
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        return (
            sid.chosen["issuer"] == cert.issuer
            and sid.chosen["serial_number"].native == cert.serial_number
        )
    return sid.chosen.native == cert.key_identifier


def _context(anchors: list[TrustAnchor], when: dt.datetime | None) -> ValidationContext:
    return ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(anchor.der) for anchor in anchors],
        moment=when,
        allow_fetching=False,
        revocation_mode="soft-fail",
    )


def _integrity(check: SignatureCheck, status: Any, signer_info: cms.SignerInfo) -> bytes | None:
    """Digest, signature and signer identifier; the signing certificate (DER) when readable."""
    if not status.intact:
        check.problems.append(_("the signed bytes were changed: the digest does not match"))
    elif not status.valid:
        check.problems.append(_("the signature value does not verify"))
    cert = status.signing_cert
    if cert is None:
        check.problems.append(_("the signature carries no signer certificate"))
        return None
    if not _signer_identified(signer_info, cert):
        check.problems.append(_("the signer identifier does not name the certificate inside"))
    return cert.dump()


# -- PDF -----------------------------------------------------------------------------------------


def _covers(check: SignatureCheck, status: Any, revision: int, revisions: int, last: bool) -> None:
    coverage = status.coverage
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        check.covers = _("the whole file")
        return
    if coverage != SignatureCoverageLevel.ENTIRE_REVISION:
        check.covers = _("part of the file")
        check.problems.append(_("the signature does not cover its whole revision of the file"))
        return
    check.covers = _("revision {revision} of {revisions}").format(
        revision=revision, revisions=revisions
    )
    level = status.modification_level
    if last or level not in ALLOWED_LATER_CHANGES:
        check.problems.append(_("the document was changed after this signature"))
    else:
        check.notes.append(_("later revisions only add signatures or fill in form fields"))
    if status.docmdp_ok is False:
        check.problems.append(_("later changes break what this signature allows (DocMDP)"))


async def verify_pdf(path: Path, extra_anchors: Iterable[TrustAnchor] = ()) -> Verification:
    """Check every signature of the PDF at ``path``."""
    anchors = [*jlis_trust_anchors(), *extra_anchors]
    result = Verification(path, "pdf")
    with open_input(path) as stream:
        if b"%PDF-" not in stream.read(1024):
            raise DocumentError(
                _("{file} is not a PDF: give its detached signature with --signature").format(
                    file=path
                )
            )
        stream.seek(0)
        try:
            reader = PdfFileReader(stream, strict=False)
            embedded = list(reader.embedded_signatures)
            revisions = reader.xrefs.total_revisions
        except (PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
            result.problems.append(
                _("the file is damaged and cannot be read ({detail})").format(detail=exc)
            )
            return result
        if not embedded:
            result.problems.append(_("the file has no signature"))
        for index, signature in enumerate(embedded):
            unnamed = _("signature {number}").format(number=index + 1)
            check = SignatureCheck(label=str(signature.field_name or unnamed))
            result.signatures.append(check)
            when = signature.self_reported_timestamp
            check.signed_at = when
            try:
                status = await async_validate_pdf_signature(
                    signature,
                    signer_validation_context=_context(anchors, when),
                    key_usage_settings=KEY_USAGE,
                )
            except Exception as exc:  # pyHanko raises many kinds for a mangled signature
                check.problems.append(
                    _("the signature cannot be checked ({detail})").format(detail=exc)
                )
                continue
            der = _integrity(check, status, signature.signer_info)
            _covers(
                check, status, signature.signed_revision + 1, revisions,
                last=index == len(embedded) - 1,
            )  # fmt: skip
            if der is not None:
                check.signer = signer_name(der)
                check_certificate(check, der, when or dt.datetime.now(dt.UTC), anchors)
            if when is None:
                check.notes.append(_("the signature gives no signing time"))
    return result


# -- CMS -----------------------------------------------------------------------------------------


def _claimed_time(signer_info: cms.SignerInfo) -> dt.datetime | None:
    for attribute in signer_info["signed_attrs"] or ():
        if attribute["type"].native == "signing_time":
            return attribute["values"][0].native
    return None


async def verify_cms(
    path: Path, signature: Path, extra_anchors: Iterable[TrustAnchor] = ()
) -> Verification:
    """Check the detached CMS signature in ``signature`` over the file at ``path``."""
    anchors = [*jlis_trust_anchors(), *extra_anchors]
    result = Verification(path, "cms")
    with open_input(signature) as stream:
        raw = stream.read()
    check = SignatureCheck(label=str(signature))
    result.signatures.append(check)
    try:
        info = cms.ContentInfo.load(raw)
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        signed_data = info["content"]
        signer_info = signed_data["signer_infos"][0]
        when = _claimed_time(signer_info)
    except (ValueError, TypeError, KeyError, IndexError):
        check.problems.append(
            _("{path} is not a CMS signature (DER SignedData)").format(path=signature)
        )
        return result
    if signed_data["encap_content_info"]["content"].native is not None:
        check.notes.append(_("the signature also holds the content (not detached)"))
    check.signed_at = when
    with open_input(path) as content:
        size = path.stat().st_size
        try:
            status = await async_validate_detached_cms(
                content,
                signed_data,
                signer_validation_context=_context(anchors, when),
                key_usage_settings=KEY_USAGE,
            )
        except Exception as exc:
            check.problems.append(
                _("the signature cannot be checked ({detail})").format(detail=exc)
            )
            return result
    check.covers = ngettext(
        "the whole file {path} ({size} byte)", "the whole file {path} ({size} bytes)", size
    ).format(path=path, size=size)
    der = _integrity(check, status, signer_info)
    if der is not None:
        check.signer = signer_name(der)
        check_certificate(check, der, when or dt.datetime.now(dt.UTC), anchors)
    if when is None:
        check.notes.append(_("the signature gives no signing time"))
    return result
