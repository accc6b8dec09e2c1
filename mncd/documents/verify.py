"""Verifying signed PDFs and detached CMS signatures, anchored at J-LIS: every signature, in
three parts (see :mod:`mncd.documents.verdict`).

Intact: the CMS digest over the ByteRange (or the file) and the signature value, what the
signature covers (the last one the whole file, an earlier one its own revision with only
signatures or form filling after it), and that the signer identifier names the certificate.
Trusted: keyUsage digitalSignature and nonRepudiation, issued by a CA (basicConstraints CA,
keyCertSign) that is one of J-LIS's bundled *signing* CAs (never the user-authentication CAs)
or one given by the caller. Valid in time: at the time an RFC 3161 timestamp proves (the
signature's own timestamp or a later document timestamp, from a TSA that is trusted), otherwise
at the present moment; the signer's claimed time (``/M``, signingTime) is shown as a claim only,
a claim without a time zone read as Japan's time. Revocation is known only from CRLs the caller
gives (J-LIS serves revocation data to registered verifiers only).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Sequence
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
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import (
    async_validate_detached_cms,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from mncd.documents.errors import DocumentError
from mncd.documents.files import open_input, unreadable
from mncd.documents.text import N_, _, japan_date, ngettext
from mncd.documents.verdict import (
    DocumentTimestamp,
    SignatureCheck,
    TimeBasis,
    Timing,
    Validity,
    Verdict,
    Verification,
)
from mncd.jpki import certificates, trust
from mncd.jpki.calendar import japan

__all__ = [
    "REVOCATION_NOTE",
    "SignatureCheck",
    "TrustAnchor",
    "Verdict",
    "Verification",
    "VerifyOptions",
    "revocation_note",
    "verify_cms",
    "verify_pdf",
]

#: The msgid of :func:`revocation_note` (English).
REVOCATION_NOTE = N_(
    "Revocation was not checked: J-LIS gives revocation data only to registered verifiers, so "
    "an invalidated certificate cannot be recognised offline (give a CRL with --crl)."
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
#: The system's CA bundle (Debian's ca-certificates): TSAs chaining to it are trusted.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def revocation_note() -> str:
    """What a verification cannot tell offline, in the user's language."""
    return _(REVOCATION_NOTE)


@dataclass(frozen=True)
class TrustAnchor:
    """A CA certificate verification may end at."""

    der: bytes
    description: str
    purpose: str = "sign"  #: J-LIS's ``sign`` or ``auth`` CA, or ``sign`` for one given

    @classmethod
    def from_file(cls, path: Path) -> TrustAnchor:
        """A CA certificate given by the caller (PEM or DER)."""
        cert = _load_file(
            path,
            x509.load_pem_x509_certificate,
            x509.load_der_x509_certificate,
            _("{path} is not a certificate: give a CA certificate in PEM or DER."),
        )
        description = _("the CA given with --ca ({path})").format(path=path)
        return cls(cert.public_bytes(serialization.Encoding.DER), description)


def _load_file(path: Path, pem: Any, der: Any, wrong: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unreadable(path, exc) from exc
    try:
        return pem(data) if b"-----BEGIN" in data else der(data)
    except ValueError:
        raise DocumentError(wrong.format(path=path)) from None


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """A certificate revocation list given by the caller (PEM or DER)."""
    return _load_file(
        path,
        x509.load_pem_x509_crl,
        x509.load_der_x509_crl,
        _("{path} is not a certificate revocation list (CRL, PEM or DER)."),
    )


def jlis_trust_anchors() -> list[TrustAnchor]:
    """J-LIS's CAs, bundled with mncd and checked against the published fingerprints."""
    names = {
        "sign": N_("J-LIS signing CA ({generation})"),
        "auth": N_("J-LIS user-authentication CA ({generation})"),
    }
    return [
        TrustAnchor(
            anchor.der,
            _(names[anchor.purpose]).format(generation=anchor.generation),
            anchor.purpose,
        )
        for anchor in trust.jlis_anchors()
    ]


def system_tsa_roots() -> list[asn1_x509.Certificate]:
    """The system's CA certificates, as roots for timestamp authorities."""
    try:
        with warnings.catch_warnings():  # a few system CAs break DER rules cryptography warns of
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(SYSTEM_CA_BUNDLE.read_bytes())
    except (OSError, ValueError):
        return []
    return [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs]


@dataclass
class VerifyOptions:
    """What a verification trusts and knows besides the bundled J-LIS CAs."""

    anchors: Sequence[TrustAnchor] = ()  #: more CAs for signatures (--ca)
    tsa_anchors: Sequence[TrustAnchor] = ()  #: more CAs for timestamp authorities (--tsa-ca)
    crls: Sequence[x509.CertificateRevocationList] = ()  #: revocation lists (--crl)
    now: dt.datetime | None = None  #: the present moment (tests)
    _all_anchors: list[TrustAnchor] = field(default_factory=list, init=False, repr=False)
    _tsa_roots: list[asn1_x509.Certificate] = field(default_factory=list, init=False, repr=False)

    @property
    def all_anchors(self) -> list[TrustAnchor]:
        if not self._all_anchors:
            self._all_anchors = [*jlis_trust_anchors(), *self.anchors]
        return self._all_anchors

    def present(self) -> dt.datetime:
        return self.now or dt.datetime.now(dt.UTC)

    def tsa_context(self) -> ValidationContext:
        if not self._tsa_roots:
            self._tsa_roots = [
                *system_tsa_roots(),
                *(asn1_x509.Certificate.load(a.der) for a in self.tsa_anchors),
            ]
        return ValidationContext(
            trust_roots=self._tsa_roots, allow_fetching=False, revocation_mode="soft-fail"
        )

    def signer_context(self) -> ValidationContext:
        return ValidationContext(
            trust_roots=[asn1_x509.Certificate.load(a.der) for a in self.all_anchors],
            moment=self.present(),
            allow_fetching=False,
            revocation_mode="soft-fail",
        )


def _options(extra: Iterable[TrustAnchor] | VerifyOptions) -> VerifyOptions:
    return extra if isinstance(extra, VerifyOptions) else VerifyOptions(anchors=tuple(extra))


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


def in_japan(moment: dt.datetime) -> str:
    """A moment as Japan's clock shows it (``2026-12-05 15:38 JST``)."""
    return moment.astimezone(japan()).strftime("%Y-%m-%d %H:%M:%S %Z")


def claimed_time(moment: dt.datetime | None, timing: Timing) -> None:
    """Record the signer's claimed time; one without a time zone is read as Japan's time."""
    if moment is None:
        timing.notes.append(_("the signature gives no signing time of its own"))
        return
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=japan())
        timing.claimed_zone_assumed = True
    timing.claimed = moment


def _chain(
    check: SignatureCheck, cert: x509.Certificate, anchors: Iterable[TrustAnchor]
) -> x509.Certificate | None:
    """The anchor that issued ``cert`` (as ``check.trust``), or None."""
    for anchor in anchors:
        ca = x509.load_der_x509_certificate(anchor.der)
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if anchor.purpose != "sign":
            check.trust.problems.append(
                _(
                    "issued by {anchor}, which certifies logging in, not signing documents: "
                    "this is not a document signature"
                ).format(anchor=anchor.description)
            )
        elif not _is_ca(ca):
            check.trust.problems.append(
                _("{anchor} is not a CA (basicConstraints)").format(anchor=anchor.description)
            )
        else:
            check.trust.anchor = anchor.description
            check.trust.ok = not check.trust.problems
        return ca
    check.notes.append(
        _(
            "the certificate does not chain to a CA mncd knows: not one of J-LIS's bundled "
            "signing CAs (an unknown CA generation, or not a JPKI certificate) nor one given "
            "with --ca"
        )
    )
    return None


def _revoked_at(
    cert: x509.Certificate,
    ca: x509.Certificate | None,
    crls: Iterable[x509.CertificateRevocationList],
) -> dt.datetime | None:
    """When a CRL from the certificate's own CA says it was revoked, if one does."""
    if ca is None:
        return None
    for crl in crls:
        if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            continue
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return entry.revocation_date_utc
    return None


def check_certificate(
    check: SignatureCheck,
    der: bytes,
    when: dt.datetime | None = None,
    anchors: Iterable[TrustAnchor] = (),
    *,
    proven: bool = False,
    crls: Iterable[x509.CertificateRevocationList] = (),
) -> None:
    """The certificate rules, judged at ``when`` (the proven time when ``proven``, else now):
    fills ``check.trust`` and ``check.timing``."""
    when = when or dt.datetime.now(dt.UTC)
    timing = check.timing
    timing.basis = TimeBasis.TIMESTAMP if proven else TimeBasis.NOW
    timing.moment = when
    try:
        cert = certificates.load(der)
        cert.extensions  # noqa: B018  (parsed lazily: a mangled one shows here)
    except (certificates.CertificateError, ValueError):
        check.trust.problems.append(_("the signer's certificate cannot be read"))
        return
    check.serial = f"{cert.serial_number:x}"
    check.issuer = cert.issuer.rfc4514_string()
    usage = _key_usage(cert)
    if usage is None or not (usage.digital_signature and usage.content_commitment):
        check.trust.problems.append(
            _(
                "the certificate's keyUsage does not allow signing documents (it needs "
                "digitalSignature and nonRepudiation)"
            )
        )
    if _is_ca(cert):
        check.trust.problems.append(_("the signer's certificate is a CA certificate"))
    ca = _chain(check, cert, anchors)
    valid = {
        "start": japan_date(cert.not_valid_before_utc),
        "end": japan_date(cert.not_valid_after_utc),
    }
    revoked = _revoked_at(cert, ca, crls)
    if when < cert.not_valid_before_utc:
        timing.validity = Validity.NOT_YET_VALID
    elif when > cert.not_valid_after_utc:
        timing.validity = Validity.EXPIRED
    elif revoked is not None and revoked <= when:
        timing.validity = Validity.REVOKED
    elif ca is not None and not _valid_at(ca, when):
        timing.validity = Validity.EXPIRED
        timing.notes.append(_("the CA's own certificate is not valid at that moment"))
    else:
        timing.validity = Validity.VALID
    at = in_japan(when)
    if timing.validity is Validity.VALID:
        if revoked is not None and proven:
            timing.notes.append(
                _("the certificate was revoked on {date}, after the proven time").format(
                    date=in_japan(revoked)
                )
            )
        return
    if proven:
        if timing.validity is Validity.REVOKED:
            timing.problems.append(
                _("the certificate had been revoked ({date}) before the proven time {time}").format(
                    date=in_japan(revoked),
                    time=at,  # type: ignore[arg-type]
                )
            )
        else:
            timing.problems.append(
                _(
                    "the certificate was not valid at the proven signing time {time} (valid "
                    "{start} to {end})"
                ).format(time=at, **valid)
            )
    elif timing.validity is Validity.NOT_YET_VALID:
        timing.problems.append(
            _("the certificate is not valid yet (valid {start} to {end})").format(**valid)
        )
    elif timing.validity is Validity.REVOKED:
        timing.notes.append(
            _(
                "the certificate is revoked (since {date}) and no timestamp proves the "
                "signature was made before"
            ).format(date=in_japan(revoked))  # type: ignore[arg-type]
        )
    else:
        timing.notes.append(
            _(
                "the certificate has expired (valid {start} to {end}) and no timestamp proves "
                "the signature was made while it was valid"
            ).format(**valid)
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


def _integrity(check: SignatureCheck, status: Any, signer_info: cms.SignerInfo) -> bytes | None:
    """Digest, signature and signer identifier; the signing certificate (DER) when readable."""
    check.intact.ok = bool(status.intact and status.valid)
    if not status.intact:
        check.intact.problems.append(_("the signed bytes were changed: the digest does not match"))
    elif not status.valid:
        check.intact.problems.append(_("the signature value does not verify"))
    cert = status.signing_cert
    if cert is None:
        check.intact.problems.append(_("the signature carries no signer certificate"))
        return None
    if not _signer_identified(signer_info, cert):
        check.intact.problems.append(
            _("the signer identifier does not name the certificate inside")
        )
    return cert.dump()


def _authority(cert: asn1_x509.Certificate | None) -> str:
    if cert is None:
        return _("(unknown)")
    try:
        return cert.subject.human_friendly
    except (ValueError, KeyError):
        return _("(unknown)")


def _signature_timestamp(check: SignatureCheck, status: Any) -> dt.datetime | None:
    """The time the signature's own RFC 3161 timestamp proves, when it is sound and trusted."""
    stamp = getattr(status, "timestamp_validity", None)
    if stamp is None:
        return None
    check.timing.timestamp_authority = _authority(stamp.signing_cert)
    if not (stamp.intact and stamp.valid):
        check.intact.problems.append(_("the signature's timestamp is damaged"))
        return None
    if stamp.trust_problem_indic is not None:
        check.timing.notes.append(
            _(
                "a timestamp says {time}, but its authority ({tsa}) is not one mncd trusts (add "
                "its CA with --tsa-ca): not taken as proof"
            ).format(time=in_japan(stamp.timestamp), tsa=check.timing.timestamp_authority)
        )
        return None
    return stamp.timestamp


def _judge(
    check: SignatureCheck,
    der: bytes | None,
    proven: dt.datetime | None,
    options: VerifyOptions,
) -> None:
    if der is None:
        return
    check.signer = signer_name(der)
    check_certificate(
        check, der, proven or options.present(), options.all_anchors,
        proven=proven is not None, crls=options.crls,
    )  # fmt: skip


# -- PDF -----------------------------------------------------------------------------------------


def _covers(check: SignatureCheck, status: Any, revision: int, revisions: int, last: bool) -> None:
    coverage = status.coverage
    intact = check.intact
    if coverage == SignatureCoverageLevel.ENTIRE_FILE:
        intact.covers = _("the whole file")
        return
    if coverage != SignatureCoverageLevel.ENTIRE_REVISION:
        intact.covers = _("part of the file")
        intact.problems.append(_("the signature does not cover its whole revision of the file"))
        return
    intact.covers = _("revision {revision} of {revisions}").format(
        revision=revision, revisions=revisions
    )
    level = status.modification_level
    if last or level not in ALLOWED_LATER_CHANGES:
        intact.problems.append(_("the document was changed after this signature"))
    else:
        check.notes.append(_("later revisions only add signatures or fill in form fields"))
    if status.docmdp_ok is False:
        intact.problems.append(_("later changes break what this signature allows (DocMDP)"))


def pdf_header_offset(head: bytes) -> int:
    """Where ``%PDF-`` starts in the first bytes of a file (-1: not a PDF)."""
    return head.find(b"%PDF-")


def _embedded(reader: PdfFileReader, result: Verification) -> list[tuple[str, object]]:
    """Every signature field of the document: filled ones read one by one (a damaged one is
    reported, not allowed to hide the others), empty ones listed."""
    found: list[tuple[str, object]] = []
    for name, value, sig_field in enumerate_sig_fields(reader, filled_status=None):
        label = str(name)
        if value is None:
            result.unsigned_fields.append(label)
            continue
        try:
            found.append((label, EmbeddedPdfSignature(reader, sig_field, label)))
        except Exception as exc:  # pyHanko raises many kinds for a mangled signature
            found.append((label, exc))
    return found


async def _document_timestamps(
    signatures: list[tuple[str, object]], options: VerifyOptions, result: Verification
) -> list[tuple[int, dt.datetime]]:
    """Check each /DocTimeStamp; the (revision, time) each trusted one proves."""
    proofs = []
    for label, embedded in signatures:
        if not isinstance(embedded, EmbeddedPdfSignature):
            continue
        if embedded.sig_object_type != "/DocTimeStamp":
            continue
        stamp = DocumentTimestamp(label=label, revision=embedded.signed_revision + 1)
        result.timestamps.append(stamp)
        try:
            status = await async_validate_pdf_timestamp(
                embedded, validation_context=options.tsa_context()
            )
        except Exception as exc:
            stamp.problems.append(
                _("the timestamp cannot be checked ({detail})").format(detail=exc)
            )
            result.problems.append(_("document timestamp {label} is damaged").format(label=label))
            continue
        stamp.time = status.timestamp
        stamp.authority = _authority(status.signing_cert)
        stamp.intact = bool(status.intact and status.valid)
        stamp.trusted = status.trust_problem_indic is None
        if not stamp.intact:
            result.problems.append(_("document timestamp {label} is damaged").format(label=label))
        elif stamp.trusted and status.timestamp is not None:
            proofs.append((embedded.signed_revision, status.timestamp))
        else:
            stamp.problems.append(
                _("its authority ({tsa}) is not one mncd trusts (add its CA with --tsa-ca)").format(
                    tsa=stamp.authority
                )
            )
    return proofs


async def verify_pdf(
    path: Path, extra_anchors: Iterable[TrustAnchor] | VerifyOptions = ()
) -> Verification:
    """Check every signature of the PDF at ``path``."""
    options = _options(extra_anchors)
    result = Verification(path, "pdf")
    with open_input(path) as stream:
        offset = pdf_header_offset(stream.read(1024))
        if offset < 0:
            raise DocumentError(
                _("{file} is not a PDF: give its detached signature with --signature").format(
                    file=path
                )
            )
        if offset > 0:
            result.problems.append(
                ngettext(
                    "the file has {n} byte before its PDF header (%PDF-): a signed PDF starts "
                    "with it, so its signatures cannot be checked",
                    "the file has {n} bytes before its PDF header (%PDF-): a signed PDF starts "
                    "with it, so its signatures cannot be checked",
                    offset,
                ).format(n=offset)
            )
            return result
        stream.seek(0)
        try:
            reader = PdfFileReader(stream, strict=False)
            revisions = reader.xrefs.total_revisions
            fields = _embedded(reader, result)
        except (PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
            result.problems.append(
                _("the file is damaged and cannot be read ({detail})").format(detail=exc)
            )
            return result
        proofs = await _document_timestamps(fields, options, result)
        readable = [
            (label, sig) for label, sig in fields
            if not isinstance(sig, EmbeddedPdfSignature) or sig.sig_object_type != "/DocTimeStamp"
        ]  # fmt: skip
        last_revision = max(
            (s.signed_revision for _l, s in fields if isinstance(s, EmbeddedPdfSignature)),
            default=-1,
        )
        for label, embedded in readable:
            check = SignatureCheck(label=label)
            result.signatures.append(check)
            if not isinstance(embedded, EmbeddedPdfSignature):
                check.intact.problems.append(
                    _("the signature cannot be read ({detail})").format(detail=embedded)
                )
                continue
            await _verify_embedded(check, embedded, options, proofs, revisions, last_revision)
    return result


async def _verify_embedded(
    check: SignatureCheck,
    embedded: EmbeddedPdfSignature,
    options: VerifyOptions,
    proofs: list[tuple[int, dt.datetime]],
    revisions: int,
    last_revision: int,
) -> None:
    subfilter = str(embedded.sig_object.get("/SubFilter", ""))
    try:
        claimed_time(embedded.self_reported_timestamp, check.timing)
        status = await async_validate_pdf_signature(
            embedded,
            signer_validation_context=options.signer_context(),
            ts_validation_context=options.tsa_context(),
            key_usage_settings=KEY_USAGE,
        )
    except Exception as exc:  # pyHanko raises many kinds for a mangled signature
        check.intact.problems.append(
            _("the signature cannot be checked ({detail})").format(detail=exc)
        )
        return
    der = _integrity(check, status, embedded.signer_info)
    _covers(
        check, status, embedded.signed_revision + 1, revisions,
        last=embedded.signed_revision == last_revision,
    )  # fmt: skip
    proven = _signature_timestamp(check, status)
    later = [time for revision, time in proofs if revision > embedded.signed_revision]
    if later and (proven is None or min(later) < proven):
        proven = min(later)
        check.timing.timestamp_authority = _("a document timestamp")
    if subfilter == "/ETSI.RFC3161":
        check.intact.problems.append(_("a timestamp where a signature was expected"))
    _judge(check, der, proven, options)


# -- CMS -----------------------------------------------------------------------------------------


def _cms_claimed_time(signer_info: cms.SignerInfo) -> dt.datetime | None:
    for attribute in signer_info["signed_attrs"] or ():
        if attribute["type"].native == "signing_time":
            return attribute["values"][0].native
    return None


def _one_signer(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> cms.SignedData:
    """A copy of ``signed_data`` with ``signer_info`` as its only signer (pyHanko checks one)."""
    single = signed_data.copy()
    single["signer_infos"] = cms.SignerInfos([cms.SignerInfo.load(signer_info.dump())])
    return single


async def verify_cms(
    path: Path, signature: Path, extra_anchors: Iterable[TrustAnchor] | VerifyOptions = ()
) -> Verification:
    """Check every signer of the detached CMS signature in ``signature`` over ``path``."""
    options = _options(extra_anchors)
    result = Verification(path, "cms", signature_file=signature)
    with open_input(signature) as stream:
        raw = stream.read()
    try:
        info = cms.ContentInfo.load(raw)
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        signed_data = info["content"]
        signer_infos = list(signed_data["signer_infos"])
        signed_data["encap_content_info"]["content"].native  # noqa: B018 (parsed lazily)
    except (ValueError, TypeError, KeyError, IndexError):
        result.problems.append(
            _("{path} is not a CMS signature (DER SignedData)").format(path=signature)
        )
        return result
    if not signer_infos:
        return result  # no signer: "no signature"
    size = path.stat().st_size if path.is_file() else 0
    for number, signer_info in enumerate(signer_infos, 1):
        label = str(signature) if len(signer_infos) == 1 else f"{signature} #{number}"
        check = SignatureCheck(label=label)
        result.signatures.append(check)
        if signed_data["encap_content_info"]["content"].native is not None:
            check.notes.append(_("the signature also holds the content (not detached)"))
        try:
            claimed_time(_cms_claimed_time(signer_info), check.timing)
            with open_input(path) as content:
                status = await async_validate_detached_cms(
                    content,
                    _one_signer(signed_data, signer_info),
                    signer_validation_context=options.signer_context(),
                    ts_validation_context=options.tsa_context(),
                    key_usage_settings=KEY_USAGE,
                )
        except DocumentError:
            raise
        except Exception as exc:
            check.intact.problems.append(
                _("the signature cannot be checked ({detail})").format(detail=exc)
            )
            continue
        check.intact.covers = ngettext(
            "the whole file {path} ({size} byte)", "the whole file {path} ({size} bytes)", size
        ).format(path=path, size=size)
        der = _integrity(check, status, signer_info)
        _judge(check, der, _signature_timestamp(check, status), options)
    return result
