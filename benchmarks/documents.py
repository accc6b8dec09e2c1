"""Signing a 50 MB PDF through the daemon against pyHanko with a software key plus the card's
own time (a Sign of a digest over D-Bus), measured in turns in the same run."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mncd import documents

from . import raw
from .stack import CardSpeed, Stack
from .stats import Row, summary

SIGN_PIN = raw.PINS["sign"]
PDF_SIZE = 50 * 1024 * 1024
TARGET = 1.2


def large_pdf(path: Path, size: int = PDF_SIZE) -> Path:
    """A one-page PDF of about ``size`` bytes (an uncompressed stream of filler)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % size + bytes(size) + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))  # fmt: skip
    path.write_bytes(out.getvalue())
    return path


def software_signer() -> Any:
    """pyHanko's SimpleSigner with an RSA-2048 key in memory."""
    from asn1crypto import keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign.signers import SimpleSigner

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchmark")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der_key = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        signing_key=keys.PrivateKeyInfo.load(der_key),
        cert_registry=None,
    )


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


async def measure(
    stack: Stack, speed: CardSpeed, rounds: int, log: Callable[[str], None]
) -> list[Row]:
    """One row: mncd.documents.sign_pdf against pyHanko (software key) + a digest Sign."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers

    client = stack.client
    assert client is not None
    work = Path(tempfile.mkdtemp(prefix="documents-", dir=stack.dir))
    source = large_pdf(work / "large.pdf")
    signer = software_signer()
    count = iter(range(10**6))

    async def software() -> None:
        with source.open("rb") as stream, (work / f"soft-{next(count)}.pdf").open("w+b") as out:
            writer = IncrementalPdfFileWriter(stream)
            metadata = signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256")
            await signers.PdfSigner(metadata, signer=signer).async_sign_pdf(writer, output=out)

    async def card() -> None:
        digest = hashlib.sha256(b"document").digest()
        await client.sign(digest, "sha256", pin=SIGN_PIN, digest=True)

    async def mncd() -> None:
        output = work / f"card-{next(count)}.pdf"
        pin = documents.PinOptions(pin=SIGN_PIN)
        await documents.sign_pdf(client, source, output, pin=pin)

    await software()  # warm-up: imports, the file in the page cache
    await mncd()  # and the signing certificate read once
    mine: list[float] = []
    soft: list[float] = []
    sign: list[float] = []
    for _ in range(rounds):
        soft.append(await _timed(software))
        sign.append(await _timed(card))
        mine.append(await _timed(mncd))
        for leftover in work.glob("*-*.pdf"):
            leftover.unlink()
        await asyncio.sleep(0)
    baseline = median(soft) + median(sign)
    log(f"[{speed.name}] 50 MB PDF: mncd {median(mine):.0f} ms, pyHanko {median(soft):.0f} ms "
        f"+ Sign {median(sign):.0f} ms")  # fmt: skip
    return [
        Row("documents", "sign a 50 MB PDF (mncd.documents.sign_pdf)", speed.name, "ms",
            median(mine), baseline, "pyHanko, software key + Sign of a digest", TARGET,
            note="one VERIFY and one card signature per document",
            samples={"mncd": summary(mine), "pyhanko": summary(soft), "sign": summary(sign)})
    ]  # fmt: skip
