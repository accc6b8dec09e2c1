"""mncctl sign on the real stack (virtual card, daemon on a private bus) with documents made by
other tools: prepared signature fields (reportlab's AcroForm, pyHanko), timestamps from a local
RFC 3161 authority, bytes before %PDF- (qpdf repairs them), ghostscript's PDFs, and a signing
ended by SIGTERM or SIGHUP. pdfsig and pyHanko's validator judge the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from busstack import daemon_on_private_bus
from faultkit import SIGN as SIGN_COMMAND
from faultkit import verifies_with_pin
from signkit import SoftwareCA, timestamp_authority
from test_daemon_dbus import wait_state
from test_documents import MNCCTL, ca_file, mncctl, pdfsig, sign_pdf


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sandbox):
    with daemon_on_private_bus(tmp_path_factory.mktemp("bus"), sandbox.env) as process:
        yield process
    assert "Traceback" not in process.log


@pytest.fixture
def ready(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    return card


@pytest.fixture(scope="module")
def tsa_ca() -> SoftwareCA:
    return SoftwareCA("Test TSA Root")


@pytest.fixture(scope="module")
def tsa(tsa_ca) -> str:
    with timestamp_authority(tsa_ca) as url:
        yield url


def form_with_fields(path: Path, *names: str) -> Path:
    """An application form from reportlab (a text field) with empty signature fields added by
    pyHanko, as a prepared contract comes."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign.fields import SigFieldSpec, append_signature_field
    from reportlab.pdfgen import canvas

    plain = path.with_suffix(".rl.pdf")
    page = canvas.Canvas(str(plain))
    page.drawString(72, 760, "Application / 申請書")
    page.acroForm.textfield(name="Applicant", x=72, y=700, width=200, height=20, value="Taro")
    page.save()
    with plain.open("rb") as stream:
        writer = IncrementalPdfFileWriter(stream)
        for number, name in enumerate(names):
            append_signature_field(
                writer, SigFieldSpec(name, box=(72, 600 - 60 * number, 272, 640 - 60 * number))
            )
        with path.open("wb") as out:
            writer.write(out)
    return path


def signatures_sent(card) -> int:
    return sum(1 for command in card.commands() if command.upper().startswith(SIGN_COMMAND))


def test_the_only_empty_field_is_signed(daemon, ready, tmp_path):
    source = form_with_fields(tmp_path / "contract.pdf", "Buyer")
    assert "The signature form field is not signed" in pdfsig(source)
    output = tmp_path / "contract-signed.pdf"
    result = sign_pdf(daemon, ready, source, output)
    assert result.returncode == 0, result.stderr
    assert "  field: Buyer" in result.stdout
    report = pdfsig(output)
    assert "Signature is Valid" in report and "not signed" not in report, report
    verified = mncctl(
        daemon.bus.address, "verify", str(output), "--ca", str(ca_file(ready, tmp_path))
    )
    assert verified.returncode == 0, verified.stdout
    assert "signature 1 (Buyer): valid" in verified.stdout
    assert "unsigned signature fields" not in verified.stdout


def test_several_empty_fields_need_a_name(daemon, ready, tmp_path):
    source = form_with_fields(tmp_path / "two.pdf", "Seller", "Buyer")
    output = tmp_path / "two-signed.pdf"
    ready.commands(clear=True)
    refused = sign_pdf(daemon, ready, source, output)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "has 2 empty signature fields (Seller, Buyer): choose one with --field NAME" in (
        refused.stderr
    )
    assert not output.exists() and signatures_sent(ready) == 0
    chosen = sign_pdf(daemon, ready, source, output, "--field", "Buyer")
    assert chosen.returncode == 0, chosen.stderr
    report = pdfsig(output)
    assert "Signature is Valid" in report and "The signature form field is not signed" in report
    verified = mncctl(
        daemon.bus.address, "verify", str(output), "--ca", str(ca_file(ready, tmp_path)), "--json"
    )
    data = json.loads(verified.stdout)
    assert verified.returncode == 0 and data["unsigned_fields"] == ["Seller"]
    assert [s["label"] for s in data["signatures"]] == ["Buyer"]
    again = sign_pdf(daemon, ready, output, tmp_path / "three.pdf", "--field", "Buyer")
    assert again.returncode == 1 and "the field 'Buyer' is signed already" in again.stderr


def test_a_pdf_timestamp_needs_pades_and_proves_the_time(daemon, ready, tmp_path, tsa, tsa_ca):
    source = subprocess_pdf(tmp_path)
    plain = sign_pdf(daemon, ready, source, tmp_path / "x.pdf", "--timestamp", tsa)
    assert plain.returncode == 2 and "--timestamp needs --pades" in plain.stderr
    assert "rejects ETSI SubFilters and document timestamps" in plain.stderr
    output = tmp_path / "b-t.pdf"
    signed = sign_pdf(daemon, ready, source, output, "--pades", "--timestamp", tsa)
    assert signed.returncode == 0, signed.stderr
    report = pdfsig(output)
    assert "Signature is Valid" in report and "ETSI.CAdES.detached" in report, report
    tsa_pem = tsa_ca.root.write_pem(tmp_path / "tsa.pem")
    ca = ca_file(ready, tmp_path)
    verified = mncctl(
        daemon.bus.address, "verify", str(output), "--ca", str(ca), "--tsa-ca", str(tsa_pem)
    )
    assert verified.returncode == 0, verified.stdout
    assert "proven by a timestamp (Common Name: Test Timestamp Authority)" in verified.stdout
    ready.commands(clear=True)
    gone = sign_pdf(daemon, ready, source, tmp_path / "y.pdf", "--pades", "--timestamp",
                    "http://127.0.0.1:9/")  # fmt: skip
    assert gone.returncode == 1 and "did not give a timestamp" in gone.stderr
    assert not (tmp_path / "y.pdf").exists()
    assert verifies_with_pin(ready.commands()) == 0  # asked before the password


def subprocess_pdf(tmp_path: Path) -> Path:
    """A PDF made by ghostscript."""
    output = tmp_path / "gs.pdf"
    subprocess.run(
        ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite",
         f"-sOutputFile={output}", "-c",
         "/Helvetica findfont 20 scalefont setfont 72 720 moveto (Contract) show showpage"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return output


def test_a_cms_timestamp(daemon, ready, tmp_path, tsa, tsa_ca):
    document = tmp_path / "contract.txt"
    document.write_text("contract\n")
    result = mncctl(
        daemon.bus.address, "sign", "--cms", str(document), "--timestamp", tsa, "--pin-stdin",
        stdin=ready.profile.sign_password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tsa_pem = tsa_ca.root.write_pem(tmp_path / "tsa.pem")
    verified = mncctl(daemon.bus.address, "verify", str(document), "--ca",
                      str(ca_file(ready, tmp_path)), "--tsa-ca", str(tsa_pem))  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    assert "proven by a timestamp" in verified.stdout


def test_leading_bytes_are_refused_with_the_repair(daemon, ready, tmp_path):
    clean = subprocess_pdf(tmp_path)
    junk = tmp_path / "mail.pdf"
    junk.write_bytes(b"Content-Type: application/pdf\r\n\r\n" + clean.read_bytes())
    info = subprocess.run(["qpdf", "--check", str(junk)], capture_output=True, text=True)
    assert "PDF Version" in info.stdout  # qpdf reads it
    ready.commands(clear=True)
    refused = sign_pdf(daemon, ready, junk, tmp_path / "out.pdf")
    assert refused.returncode == 1
    assert f"repair it with 'qpdf {junk} repaired.pdf'" in refused.stderr
    assert "make the PDF again" not in refused.stderr and signatures_sent(ready) == 0
    repaired = tmp_path / "repaired.pdf"
    subprocess.run(["qpdf", str(junk), str(repaired)], check=False)
    signed = sign_pdf(daemon, ready, repaired, tmp_path / "out.pdf")
    assert signed.returncode == 0, signed.stderr
    assert "Signature is Valid" in pdfsig(tmp_path / "out.pdf")


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signing_ended_by_a_signal_leaves_nothing(daemon, insert_card, tmp_path, ending):
    """kill or a closed terminal while the card signs: no temporary file, no output."""
    card = insert_card(sign_delay_ms=4000)
    wait_state(daemon.bus.address, "card-present")
    folder = tmp_path / "ダウンロード"
    folder.mkdir()
    source = subprocess_pdf(tmp_path)
    output = folder / "signed.pdf"
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address, "LANG": "C.UTF-8"}
    password = tmp_path / "password"
    password.write_text(card.profile.sign_password + "\n")
    with password.open() as stdin:
        process = subprocess.Popen(
            [MNCCTL, "sign", "--pdf", str(source), "-o", str(output), "--pin-stdin"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(folder.glob(".signed.pdf.*.tmp")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    (temporary,) = folder.glob(".signed.pdf.*.tmp")
    assert oct(temporary.stat().st_mode & 0o777) == "0o600"
    process.send_signal(ending)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 5, err
    assert list(folder.iterdir()) == []
    wait_state(daemon.bus.address, "card-present")  # the daemon carries on


def test_a_certification_that_allows_form_filling_and_signing_is_kept(daemon, ready, tmp_path):
    """An earlier certifying signature (DocMDP P=2: forms and signatures allowed) stays valid
    after the card signs; one that allows no change refuses the card's signature (see
    test_documents)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import MDPPerm
    from signkit import pyhanko_signer

    issuer = SoftwareCA("Certifying CA")
    source = form_with_fields(tmp_path / "certified-in.pdf")
    certified = tmp_path / "certified.pdf"
    metadata = signers.PdfSignatureMetadata(
        field_name="Author", certify=True, docmdp_permissions=MDPPerm.FILL_FORMS
    )
    with source.open("rb") as stream, certified.open("wb") as out:
        signers.sign_pdf(
            IncrementalPdfFileWriter(stream), metadata,
            signer=pyhanko_signer(issuer.issue("Author"), issuer), output=out,
        )  # fmt: skip
    output = tmp_path / "certified-signed.pdf"
    result = sign_pdf(daemon, ready, certified, output)
    assert result.returncode == 0, result.stderr
    report = pdfsig(output)
    assert report.count("Signature is Valid") == 2, report
    ca = ca_file(ready, tmp_path)
    author_ca = issuer.root.write_pem(tmp_path / "author-ca.pem")
    verified = mncctl(daemon.bus.address, "verify", str(output), "--ca", str(ca), "--ca",
                      str(author_ca))  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    assert "later revisions only add signatures or fill in form fields" in verified.stdout


def test_verify_finds_the_p7s_of_a_pdf_signed_with_cms(daemon, ready, tmp_path):
    """mncctl sign --cms doc.pdf, then mncctl verify doc.pdf: the .p7s beside it is checked."""
    document = subprocess_pdf(tmp_path)
    result = mncctl(
        daemon.bus.address, "sign", "--cms", str(document), "--pin-stdin",
        stdin=ready.profile.sign_password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    verified = mncctl(daemon.bus.address, "verify", str(document), "--ca",
                      str(ca_file(ready, tmp_path)))  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    assert f"signature file: {document}.p7s" in verified.stdout
    assert f"signed by:  {ready.profile.name}" in verified.stdout
