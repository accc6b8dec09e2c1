"""Signed documents (mncctl sign --pdf / --cms, mncctl verify) on the real stack: the virtual
card, the daemon on a private bus, and third-party checks (pdfsig, qpdf, openssl, pyHanko)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import cms
from busstack import daemon_on_private_bus
from faultkit import verifies_with_pin
from pdfkit import append_revision, make_pdf, sign_with_software_key
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state

MNCCTL = str(Path(sys.executable).with_name("mncctl"))
from faultkit import SIGN as SIGN_COMMAND


def mncctl(
    address: str, *args: str, stdin: str | None = None, display: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANG": "C.UTF-8"}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    if display:
        env["DISPLAY"] = display
    return subprocess.run(
        [MNCCTL, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def daemon(tmp_path, sandbox):
    (tmp_path / "bus").mkdir()
    with daemon_on_private_bus(tmp_path / "bus", sandbox.env) as process:
        yield process
    assert "Traceback" not in process.log


def signatures_sent(commands: list[str]) -> int:
    return sum(1 for command in commands if command.upper().startswith(SIGN_COMMAND))


def ca_file(card, tmp_path: Path) -> Path:
    """The virtual card's signing CA, as mncctl verify --ca takes it."""
    path = tmp_path / "sign-ca.der"
    path.write_bytes(card.certificates()["sign-ca"])
    return path


def sign_pdf(daemon, card, source: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    return mncctl(
        daemon.bus.address, "sign", "--pdf", str(source), "-o", str(output), "--pin-stdin",
        *extra, stdin=card.profile.sign_password + "\n",
    )  # fmt: skip


def pdfsig(path: Path) -> str:
    done = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def signature_dictionaries(path: Path) -> list[dict[str, object]]:
    """Every /Sig dictionary of the file, as pyHanko reads it."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    with path.open("rb") as stream:
        reader = PdfFileReader(stream)
        result = []
        for embedded in reader.embedded_signatures:
            sig = embedded.sig_object
            result.append({key[1:]: sig.raw_get(key) for key in sig})
        return result


async def pyhanko_validate(path: Path, ca: bytes) -> list[object]:
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca)])
    with path.open("rb") as stream:
        reader = PdfFileReader(stream)
        return [
            await async_validate_pdf_signature(embedded, signer_validation_context=context)
            for embedded in reader.embedded_signatures
        ]


# -- PDF -----------------------------------------------------------------------------------------


def test_pdf_signature_follows_the_ministrys_rules(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "申請書.pdf")
    before = source.read_bytes()
    output = tmp_path / "signed.pdf"
    card.commands(clear=True)
    result = sign_pdf(daemon, card, source, output, "--reason", "登記申請", "--location", "東京")
    assert result.returncode == 0, result.stderr
    assert card.profile.sign_password not in result.stdout + result.stderr
    assert f"/Name: {card.profile.name}" in result.stdout
    # One VERIFY, one signature; IN untouched; OUT private (it carries the certificate).
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 1
    assert source.read_bytes() == before
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    data = output.read_bytes()
    assert data.startswith(before)  # an incremental update

    (sig,) = signature_dictionaries(output)
    assert sig["Type"] == "/Sig"
    assert sig["SubFilter"] == "/adbe.pkcs7.detached"
    assert sig["Name"] == card.profile.name
    assert sig["Reason"] == "登記申請" and sig["Location"] == "東京"
    assert re.fullmatch(r"D:\d{14}\+09'00'", str(sig["M"].original_bytes.decode()))
    start, first, second, rest = (int(n) for n in sig["ByteRange"])
    assert start == 0 and second + rest == len(data)
    hole = data[first:second]
    assert hole.startswith(b"<") and hole.endswith(b">")  # exactly the hex value of /Contents
    contents = bytes.fromhex(hole[1:-1].decode())
    info = cms.ContentInfo.load(contents.rstrip(b"\0"))
    assert contents[len(info.dump()) :].strip(b"\0") == b""  # padded with 00 only
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    (signer,) = signed["signer_infos"]
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_rsa"
    attributes = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    assert attributes["content_type"] == "data"
    covered = data[:first] + data[second:]
    assert attributes["message_digest"] == hashlib.sha256(covered).digest()
    certificates = {c.chosen.dump() for c in signed["certificates"]}
    pki = card.certificates()
    assert certificates == {pki["sign"], pki["sign-ca"]}

    # Third parties: poppler, qpdf, pyHanko.
    report = pdfsig(output)
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Total document signed" in report and "Not total" not in report
    assert subprocess.run(["qpdf", "--check", str(output)], capture_output=True).returncode == 0
    (status,) = asyncio.run(pyhanko_validate(output, pki["sign-ca"]))
    assert status.intact and status.valid and status.trusted
    assert status.coverage.name == "ENTIRE_FILE"

    # mncctl verify: anchored with the card's CA; not anchored without it.
    ca = ca_file(card, tmp_path)
    verified = mncctl(daemon.bus.address, "verify", str(output), "--ca", str(ca))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signed by:  {card.profile.name}" in verified.stdout
    assert "covers:     the whole file" in verified.stdout
    assert "Revocation was not checked" in verified.stdout
    unanchored = mncctl(daemon.bus.address, "verify", str(output))
    assert unanchored.returncode == 8, unanchored.stdout
    assert "not anchored" in unanchored.stdout
