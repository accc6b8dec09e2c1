"""Signing PDFs with the My Number Card, as the Legal Affairs Bureau accepts them.

By default ``/SubFilter /adbe.pkcs7.detached`` (the ministry's rules refuse ETSI SubFilters),
``/Name`` the holder's name, ``/M`` in Japan's time, CMS SignedData with SHA-256 and
sha256WithRSAEncryption carrying the signing certificate and its CA. ``pades=True`` gives PAdES
B-B (``/ETSI.CAdES.detached``) for other recipients, B-T with a timestamp authority's URL.
Always an incremental update: existing signatures stay valid; the input is never changed.

The signature goes into the field named, else into the document's only empty signature field
(the one a contract or a form prepared), else into a new invisible field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter, enumerate_sig_fields
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.pdf_signer import PdfSigningSession

from mncd.client import MyNumberCard
from mncd.documents.errors import DocumentError, NotSignable
from mncd.documents.files import atomic_output, check_output, open_input
from mncd.documents.signer import CardSigner, PinOptions, holder_name, now_in_japan, sign_once
from mncd.documents.text import _, ngettext
from mncd.documents.timestamps import timestamper

#: How far into the file the ``%PDF-`` header may start (as PDF readers allow).
HEADER_WINDOW = 1024


@dataclass(frozen=True)
class PdfSignature:
    """What :func:`sign_pdf` made."""

    output: Path
    certificate: bytes  #: the signing certificate (DER; personal data)
    name: str  #: the /Name written
    signing_time: dt.datetime  #: /M, in Japan's time
    subfilter: str  #: adbe.pkcs7.detached or ETSI.CAdES.detached
    field_name: str = ""  #: the signature field signed
    warnings: list[str] = dataclasses.field(default_factory=list)


class _JapanTimePdfSigner(PdfSigner):
    """pyHanko's PdfSigner with the signing time (/M) given, in Japan's time zone."""

    def __init__(self, *args: object, signing_time: dt.datetime, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._signing_time = signing_time

    def init_signing_session(
        self, pdf_out: object, existing_fields_only: bool = False
    ) -> PdfSigningSession:
        session = super().init_signing_session(pdf_out, existing_fields_only)  # type: ignore[arg-type]
        session.system_time = self._signing_time
        return session


def open_pdf(stream: BinaryIO, path: Path) -> IncrementalPdfFileWriter:
    """An incremental writer over the PDF in ``stream``, or :class:`NotSignable` saying why the
    file cannot be signed (not a PDF, damaged, encrypted)."""
    head = stream.read(HEADER_WINDOW)
    stream.seek(0)
    offset = head.find(b"%PDF-")
    if offset < 0:
        raise NotSignable(
            _("{path} is not a PDF file: sign other files with --cms.").format(path=path)
        )
    if offset > 0:
        raise NotSignable(
            ngettext(
                "{path} has {n} byte before its PDF header (%PDF-), which a signed PDF must "
                "start with: repair it with 'qpdf {path} repaired.pdf' and sign repaired.pdf.",
                "{path} has {n} bytes before its PDF header (%PDF-), which a signed PDF must "
                "start with: repair it with 'qpdf {path} repaired.pdf' and sign repaired.pdf.",
                offset,
            ).format(path=path, n=offset)
        )
    try:
        writer = IncrementalPdfFileWriter(stream, strict=True)
    except (PdfError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise damaged(path, exc) from None
    if writer.prev.encrypted:
        raise NotSignable(
            _(
                "{path} is encrypted (password-protected): remove the protection, then sign it."
            ).format(path=path)
        )
    try:
        locked = [
            embedded.field_name
            for embedded in writer.prev.embedded_signatures
            if embedded.docmdp_level == MDPPerm.NO_CHANGES
        ]
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise NotSignable(
            _("{path} has a damaged signature and cannot be signed ({detail}).").format(
                path=path, detail=exc
            )
        ) from None
    if locked:
        raise NotSignable(
            _(
                "{path} is locked by its signature '{field}' (no changes allowed): another "
                "signature would invalidate it."
            ).format(path=path, field=locked[-1])
        )
    return writer


def damaged(path: Path, exc: Exception) -> NotSignable:
    """The error for a PDF that cannot be read well enough to sign it."""
    return NotSignable(
        _(
            "{path} cannot be read well enough to sign it ({detail}). If qpdf reads it, 'qpdf "
            "{path} repaired.pdf' writes a repaired copy to sign; otherwise make the PDF again "
            "with the program that made it."
        ).format(path=path, detail=exc)
    )


def signature_fields(writer: IncrementalPdfFileWriter) -> dict[str, bool]:
    """The document's signature fields: name → signed already."""
    try:
        return {
            str(name): value is not None for name, value, _field in enumerate_sig_fields(writer)
        }
    except (PdfError, ValueError, KeyError, TypeError):
        return {}


def free_field_name(taken: dict[str, bool]) -> str:
    """``Signature1``, ``Signature2``, …: the first name no field of the document has."""
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


def choose_field(writer: IncrementalPdfFileWriter, path: Path, wanted: str | None = None) -> str:
    """The field to sign: ``wanted`` (empty, or new), else the only empty signature field, else
    a new one. Several empty fields and none named: :class:`NotSignable` listing them."""
    fields = signature_fields(writer)
    if wanted is not None:
        if fields.get(wanted):
            raise NotSignable(
                _("{path}: the field '{field}' is signed already: name an empty one.").format(
                    path=path, field=wanted
                )
            )
        return wanted
    empty = [name for name, signed in fields.items() if not signed]
    if len(empty) > 1:
        raise NotSignable(
            _(
                "{path} has {n} empty signature fields ({fields}): choose one with --field NAME."
            ).format(path=path, n=len(empty), fields=", ".join(empty))
        )
    return empty[0] if empty else free_field_name(fields)


async def sign_pdf(
    card: MyNumberCard,
    source: Path,
    output: Path,
    *,
    reason: str | None = None,
    location: str | None = None,
    name: str | None = None,
    pades: bool = False,
    field: str | None = None,
    timestamp_url: str | None = None,
    force: bool = False,
    pin: PinOptions | None = None,
) -> PdfSignature:
    """Sign the PDF ``source`` with the card's signing key into ``output`` (one PIN, one card
    signature), in ``field`` (see :func:`choose_field`); with ``timestamp_url`` (PAdES only) a
    B-T signature. ``output`` is written atomically, 0600, never over a file unless ``force``."""
    if timestamp_url and not pades:
        raise DocumentError(timestamp_needs_pades())
    check_output(output, force=force, inputs=(source,))
    with open_input(source) as stream:
        writer = open_pdf(stream, source)  # refused before any PIN is asked
        field_name = choose_field(writer, source, field)
        signing_time = now_in_japan()
        subfilter = SigSeedSubFilter.PADES if pades else SigSeedSubFilter.ADOBE_PKCS7_DETACHED
        written: dict[str, str] = {}

        async def build(signer: CardSigner) -> None:
            written["name"] = name or holder_name(signer.certificate)
            metadata = PdfSignatureMetadata(
                field_name=field_name,
                name=written["name"],
                reason=reason or None,
                location=location or None,
                subfilter=subfilter,
                md_algorithm="sha256",
            )
            pdf_signer = _JapanTimePdfSigner(
                metadata,
                signer=signer,
                signing_time=signing_time,
                timestamper=timestamper(timestamp_url),
            )
            with atomic_output(output, force=force) as out:
                try:
                    await pdf_signer.async_sign_pdf(writer, output=out)
                except SigningError as exc:
                    raise NotSignable(
                        _("{path} cannot be signed ({detail}).").format(path=source, detail=exc)
                    ) from None
                except PdfError as exc:
                    raise damaged(source, exc) from None

        _, certificate, check = await sign_once(card, build, pin or PinOptions(), signing_time)
    if not written:
        raise DocumentError(_("Nothing was signed."))
    return PdfSignature(
        output=output,
        certificate=certificate,
        name=written["name"],
        signing_time=signing_time,
        subfilter=subfilter.value.lstrip("/"),
        field_name=field_name,
        warnings=[check.warning] if check.warning else [],
    )


def timestamp_needs_pades() -> str:
    """Why the default PDF signature takes no timestamp."""
    return _(
        "--timestamp needs --pades (PAdES B-T) or --cms (CAdES-T): the default PDF signature is "
        "the form the Legal Affairs Bureau accepts, and its checker rejects ETSI SubFilters and "
        "document timestamps."
    )
