"""Detached CMS signatures (``.p7s``) over any file, with the My Number Card.

SignedData with SHA-256, signed attributes contentType, messageDigest, signingTime (Japan's
time) and the signing certificate's hash, the signing certificate and its CA inside; with a
timestamp authority's URL, an RFC 3161 signature timestamp too (CAdES-T). Checked by
``openssl cms -verify -binary -inform DER -in FILE.p7s -content FILE``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

from mncd.client import MyNumberCard
from mncd.documents.files import check_output, open_input, write_private
from mncd.documents.signer import CardSigner, PinOptions, now_in_japan, sign_once
from mncd.documents.timestamps import timestamper


@dataclass(frozen=True)
class CmsSignature:
    """What :func:`sign_cms` made."""

    output: Path
    certificate: bytes  #: the signing certificate (DER; personal data)
    signing_time: dt.datetime
    warnings: list[str] = field(default_factory=list)


def default_output(source: Path) -> Path:
    """``FILE.p7s`` beside ``FILE``."""
    return source.with_name(source.name + ".p7s")


async def sign_cms(
    card: MyNumberCard,
    source: Path,
    output: Path | None = None,
    *,
    force: bool = False,
    pin: PinOptions | None = None,
    timestamp_url: str | None = None,
) -> CmsSignature:
    """A detached CMS signature over ``source`` in ``output`` (default ``FILE.p7s``): one PIN,
    one card signature; written atomically, 0600, never over a file unless ``force``."""
    output = output or default_output(source)
    check_output(output, force=force, inputs=(source,))
    signing_time = now_in_japan()
    with open_input(source) as stream:

        async def build(signer: CardSigner) -> bytes:
            stream.seek(0)
            signed = await signer.async_sign_general_data(
                stream,
                "sha256",
                detached=True,
                timestamper=timestamper(timestamp_url),
                signed_attr_settings=PdfCMSSignedAttributes(signing_time=signing_time),
            )
            return signed.dump()

        der, certificate, check = await sign_once(card, build, pin or PinOptions(), signing_time)
    write_private(output, der, force=force)
    return CmsSignature(
        output=output,
        certificate=certificate,
        signing_time=signing_time,
        warnings=[check.warning] if check.warning else [],
    )
