"""Documents signed by others, made in the tests: a software CA with its signers, a local RFC 3161
timestamp authority over HTTP (pyHanko's test TSA behind http.server), and pyHanko signing PDFs
and detached CMS with them (backdated, without a time zone, with several signers)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import cms, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class Issued:
    """A key and its certificate, in the forms cryptography and pyHanko use."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def asn1(self) -> asn1_x509.Certificate:
        return asn1_x509.Certificate.load(self.der)

    def key_info(self) -> asn1_keys.PrivateKeyInfo:
        return asn1_keys.PrivateKeyInfo.load(
            self.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


class SoftwareCA:
    """A CA of our own (not J-LIS) that issues signing and timestamping certificates."""

    def __init__(self, name: str = "Test Signing CA") -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=3650))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
            .sign(key, hashes.SHA256())
        )
        self.root = Issued(key, cert)

    def issue(
        self,
        name: str,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        timestamping: bool = False,
    ) -> Issued:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.root.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start or NOW - dt.timedelta(days=30))
            .not_valid_after(end or NOW + dt.timedelta(days=365))
        )
        if timestamping:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True
            ).add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
            )
        else:
            builder = builder.add_extension(
                x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
            )
        return Issued(key, builder.sign(self.root.key, hashes.SHA256()))

    def crl(self, revoked: Issued, when: dt.datetime) -> bytes:
        """A CRL (DER) that says ``revoked`` was revoked at ``when``."""
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revoked.cert.serial_number)
            .revocation_date(when)
            .build()
        )
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.root.cert.subject)
            .last_update(NOW - dt.timedelta(hours=1))
            .next_update(NOW + dt.timedelta(days=7))
            .add_revoked_certificate(entry)
            .sign(self.root.key, hashes.SHA256())
        )
        return crl.public_bytes(serialization.Encoding.DER)


def pyhanko_signer(issued: Issued, ca: SoftwareCA):
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    return SimpleSigner(
        signing_cert=issued.asn1(),
        signing_key=issued.key_info(),
        cert_registry=SimpleCertificateStore.from_certs([ca.root.asn1()]),
    )


class _TsaHandler(http.server.BaseHTTPRequestHandler):
    stamper = None  # set on the class made per server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = tsp.TimeStampReq.load(body)
        response = asyncio.run(self.stamper.async_request_tsa_response(request))
        data = response.dump()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def timestamp_authority(ca: SoftwareCA) -> Iterator[str]:
    """An RFC 3161 TSA over HTTP on 127.0.0.1 (its certificate issued by ``ca``): its URL."""
    from pyhanko.sign.timestamps import DummyTimeStamper
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    tsa = ca.issue("Test Timestamp Authority", timestamping=True)
    stamper = DummyTimeStamper(
        tsa_cert=tsa.asn1(),
        tsa_key=tsa.key_info(),
        certs_to_embed=SimpleCertificateStore.from_certs([ca.root.asn1()]),
    )
    handler = type("Handler", (_TsaHandler,), {"stamper": stamper})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def sign_pdf_as(
    source: Path,
    output: Path,
    signer,
    *,
    field: str = "Signature1",
    claimed: dt.datetime | None = None,
    pades: bool = False,
    timestamp_url: str | None = None,
) -> Path:
    """pyHanko signs ``source`` into ``output``; ``claimed`` sets /M (naive: no time zone)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import SigSeedSubFilter
    from pyhanko.sign.timestamps import HTTPTimeStamper

    class Backdated(signers.PdfSigner):
        def init_signing_session(self, pdf_out, existing_fields_only=False):
            session = super().init_signing_session(pdf_out, existing_fields_only)
            if claimed is not None:
                session.system_time = claimed
            return session

    metadata = signers.PdfSignatureMetadata(
        field_name=field,
        subfilter=SigSeedSubFilter.PADES if pades else SigSeedSubFilter.ADOBE_PKCS7_DETACHED,
    )
    stamper = HTTPTimeStamper(timestamp_url) if timestamp_url else None
    with source.open("rb") as stream:
        writer = IncrementalPdfFileWriter(stream)
        with output.open("wb") as out:
            Backdated(metadata, signer=signer, timestamper=stamper).sign_pdf(writer, output=out)
    return output


def sign_cms_as(source: Path, output: Path, *signers_) -> Path:
    """A detached CMS over ``source`` with one SignerInfo per signer."""
    data = source.read_bytes()
    infos = []
    first = None
    for signer in signers_:
        signed = asyncio.run(signer.async_sign_general_data(data, "sha256", detached=True))
        first = first or signed
        infos.append(signed["content"]["signer_infos"][0])
    assert first is not None
    content = first["content"]
    certs = [cert for signer in signers_ for cert in [signer.signing_cert]]
    merged = cms.SignedData(
        {
            "version": content["version"],
            "digest_algorithms": content["digest_algorithms"],
            "encap_content_info": content["encap_content_info"],
            "certificates": [cms.CertificateChoices({"certificate": c}) for c in certs],
            "signer_infos": infos,
        }
    )
    output.write_bytes(cms.ContentInfo({"content_type": "signed_data", "content": merged}).dump())
    return output


def add_document_timestamp(source: Path, output: Path, timestamp_url: str) -> Path:
    """pyHanko adds an RFC 3161 document timestamp (/DocTimeStamp) to a signed PDF."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign.signers import PdfTimeStamper
    from pyhanko.sign.timestamps import HTTPTimeStamper

    with source.open("rb") as stream:
        writer = IncrementalPdfFileWriter(stream)
        with output.open("wb") as out:
            PdfTimeStamper(HTTPTimeStamper(timestamp_url)).timestamp_pdf(
                writer, "sha256", output=out
            )
    return output
