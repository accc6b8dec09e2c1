"""Signing PDFs with the My Number Card, as the Legal Affairs Bureau accepts them.

By default ``/SubFilter /adbe.pkcs7.detached`` (the ministry's rules refuse ETSI SubFilters),
``/Name`` the holder's name, ``/M`` in Japan's time, CMS SignedData with SHA-256 and
sha256WithRSAEncryption carrying the signing certificate and its CA. ``pades=True`` gives PAdES
B-B (``/ETSI.CAdES.detached``) for other recipients. Always an incremental update: existing
signatures stay valid; the input is never changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
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
from mncd.documents.text import _

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
    warnings: list[str] = field(default_factory=list)


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
    if b"%PDF-" not in head:
        raise NotSignable(
            _("{path} is not a PDF file: sign other files with --cms.").format(path=path)
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
            "{path} is damaged and cannot be signed ({detail}): make the PDF again with the "
            "program that made it."
        ).format(path=path, detail=exc)
    )


def free_field_name(writer: IncrementalPdfFileWriter) -> str:
    """``Signature1``, ``Signature2``, …: the first name no field of the document has."""
    try:
        taken = {str(name) for name, _, _ in enumerate_sig_fields(writer)}
    except (PdfError, ValueError, KeyError, TypeError):
        taken = set()
    return next(f"Signature{n}" for n in range(1, len(taken) + 2) if f"Signature{n}" not in taken)


async def sign_pdf(
    card: MyNumberCard,
    source: Path,
    output: Path,
    *,
    reason: str | None = None,
    location: str | None = None,
    name: str | None = None,
    pades: bool = False,
    force: bool = False,
    pin: PinOptions | None = None,
) -> PdfSignature:
    """Sign the PDF ``source`` with the card's signing key into ``output`` (one PIN, one card
    signature). ``output`` is written atomically, 0600, never over a file unless ``force``."""
    check_output(output, force=force, inputs=(source,))
    with open_input(source) as stream:
        writer = open_pdf(stream, source)  # refused before any PIN is asked
        signing_time = now_in_japan()
        subfilter = SigSeedSubFilter.PADES if pades else SigSeedSubFilter.ADOBE_PKCS7_DETACHED
        written: dict[str, str] = {}

        async def build(signer: CardSigner) -> None:
            written["name"] = name or holder_name(signer.certificate)
            metadata = PdfSignatureMetadata(
                field_name=free_field_name(writer),
                name=written["name"],
                reason=reason or None,
                location=location or None,
                subfilter=subfilter,
                md_algorithm="sha256",
            )
            pdf_signer = _JapanTimePdfSigner(metadata, signer=signer, signing_time=signing_time)
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
        warnings=[check.warning] if check.warning else [],
    )
