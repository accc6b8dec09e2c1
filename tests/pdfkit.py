"""Test documents: plain PDFs written byte by byte, and pyHanko with a software key (to make
files signed by someone else, and to lock or encrypt them)."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_pdf(path: Path, text: str = "Application form", filler: int = 0) -> Path:
    """A one-page PDF (with ``filler`` bytes of uncompressed stream data to make it large)."""
    content = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Length %d >>\nstream\n" % filler
        + bytes(filler)
        + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref))  # fmt: skip
    path.write_bytes(out.getvalue())
    return path


def append_revision(path: Path, text: str = "changed after signing") -> None:
    """Append an incremental update that replaces the page's content stream (not a signature)."""
    data = path.read_bytes()
    previous = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    size = max(int(n) for n in re.findall(rb"/Size (\d+)", data))
    root = re.findall(rb"/Root (\d+ \d+ R)", data)[-1]
    content = f"BT /F1 24 Tf 72 600 Td ({text}) Tj ET".encode()
    body = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"
    out = io.BytesIO(data)
    out.seek(0, io.SEEK_END)
    if not data.endswith(b"\n"):
        out.write(b"\n")
    offset = out.tell()
    out.write(b"4 0 obj\n" + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n4 1\n%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        size, root, previous, xref))  # fmt: skip
    path.write_bytes(out.getvalue())


def software_key(name: str = "Software signer") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed RSA-2048 signing certificate (nonRepudiation + digitalSignature)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def software_signer(name: str = "Software signer"):
    """A pyHanko SimpleSigner with a fresh software key."""
    from pyhanko.sign.signers import SimpleSigner

    key, cert = software_key(name)
    der_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        signing_key=asn1_keys.PrivateKeyInfo.load(der_key),
        cert_registry=None,
    )


def sign_with_software_key(source: Path, output: Path, *, certify_no_changes: bool = False) -> None:
    """Sign ``source`` with a software key (``certify_no_changes``: a certification signature
    that allows no later change)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import MDPPerm

    metadata = signers.PdfSignatureMetadata(
        field_name="Author",
        certify=certify_no_changes,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    with source.open("rb") as stream:
        writer = IncrementalPdfFileWriter(stream)
        with output.open("wb") as out:
            signers.sign_pdf(writer, metadata, signer=software_signer(), output=out)
