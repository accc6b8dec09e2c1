"""mncctl verify on documents signed by others: pyHanko with a software CA of the test's own, a
local RFC 3161 timestamp authority, qpdf; pdfsig and pyHanko's validator as independent judges.
Each case of the three-part verdict (intact, trusted, valid in time) and its exit code."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pdfkit import make_pdf
from signkit import (
    NOW,
    SoftwareCA,
    add_document_timestamp,
    pyhanko_signer,
    sign_cms_as,
    sign_pdf_as,
    timestamp_authority,
)

MNCCTL = str(Path(sys.executable).with_name("mncctl"))


def verify(*args: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess:
    env = {**os.environ, "LANG": lang, "LANGUAGE": ""}
    for name in ("LC_ALL", "LC_MESSAGES", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(name, None)
    return subprocess.run(
        [MNCCTL, "verify", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def pdfsig(path: Path) -> str:
    done = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def ca() -> SoftwareCA:
    return SoftwareCA()


@pytest.fixture(scope="module")
def tsa(ca) -> str:
    with timestamp_authority(ca) as url:
        yield url


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ダウンロード")


@pytest.fixture(scope="module")
def ca_pem(ca, folder) -> Path:
    return ca.root.write_pem(folder / "ca.pem")


@pytest.fixture(scope="module")
def expired(ca):
    """A certificate that expired yesterday (valid for the month before)."""
    return ca.issue(
        "Expired Signer", start=NOW - dt.timedelta(days=40), end=NOW - dt.timedelta(days=1)
    )


def test_a_backdated_signature_from_an_expired_certificate_is_not_valid(
    ca, expired, folder, ca_pem
):
    """Signed today, the clock set 10 days back: the claim is shown as a claim, and the verdict
    is judged now (exit 9), never "valid"."""
    signed = sign_pdf_as(
        make_pdf(folder / "backdated-in.pdf"), folder / "backdated.pdf",
        pyhanko_signer(expired, ca), claimed=NOW - dt.timedelta(days=10),
    )  # fmt: skip
    assert "Signature is Valid" in pdfsig(signed)  # intact for pdfsig too
    result = verify(signed, "--ca", ca_pem)
    assert result.returncode == 9, result.stdout + result.stderr
    out = result.stdout
    assert "intact:     yes" in out and "trusted:    yes (the CA given with --ca" in out
    assert "in time:    NO: certificate expired, judged now (" in out
    assert "no timestamp proves when it was signed" in out
    assert "(as the signer's computer says)" in out
    assert "result: NOT VALID: the certificate is expired or revoked" in out
    ja = verify(signed, "--ca", ca_pem, lang="ja_JP.UTF-8")
    assert ja.returncode == 9 and "タイムスタンプ" in ja.stdout, ja.stdout


def test_a_timestamp_decides_the_time(ca, expired, tsa, folder, ca_pem):
    """A trusted RFC 3161 timestamp is the time judged at: after the expiry it proves the
    signature invalid (7); for a valid certificate it proves the time (0)."""
    late = sign_pdf_as(
        make_pdf(folder / "late-in.pdf"), folder / "late.pdf", pyhanko_signer(expired, ca),
        pades=True, timestamp_url=tsa,
    )  # fmt: skip
    result = verify(late, "--ca", ca_pem, "--tsa-ca", ca_pem)
    assert result.returncode == 7, result.stdout
    assert "proven by a timestamp (Common Name: Test Timestamp Authority)" in result.stdout
    assert "was not valid at the proven signing time" in result.stdout

    fresh = ca.issue("Timestamped Signer")
    good = sign_pdf_as(
        make_pdf(folder / "good-in.pdf"), folder / "good.pdf", pyhanko_signer(fresh, ca),
        pades=True, timestamp_url=tsa,
    )  # fmt: skip
    report = pdfsig(good)
    assert "Signature is Valid" in report and "ETSI.CAdES.detached" in report, report
    ok = verify(good, "--ca", ca_pem, "--tsa-ca", ca_pem, "--json")
    assert ok.returncode == 0, ok.stdout
    (signature,) = json.loads(ok.stdout)["signatures"]
    assert signature["verdict"] == "valid"
    assert signature["timing"]["basis"] == "timestamp" and signature["timing"]["ok"] is True
    assert signature["intact"]["ok"] and signature["trust"]["ok"]
    # The TSA not trusted: the timestamp is no proof, the time is judged now.
    unproven = verify(good, "--ca", ca_pem, "--json")
    timing = json.loads(unproven.stdout)["signatures"][0]["timing"]
    assert unproven.returncode == 0 and timing["basis"] == "now"
    assert any("not one mncd trusts" in note for note in timing["notes"])


def test_a_revoked_certificate_is_not_valid_when_a_crl_says_so(ca, folder, ca_pem):
    moved = ca.issue("Moved Signer")
    signed = sign_pdf_as(make_pdf(folder / "moved-in.pdf"), folder / "moved.pdf",
                         pyhanko_signer(moved, ca))  # fmt: skip
    crl = folder / "ca.crl"
    crl.write_bytes(ca.crl(moved, NOW - dt.timedelta(days=1)))
    without = verify(signed, "--ca", ca_pem)
    assert without.returncode == 0 and "Revocation was not checked" in without.stdout
    revoked = verify(signed, "--ca", ca_pem, "--crl", crl)
    assert revoked.returncode == 9, revoked.stdout
    assert "in time:    NO: certificate revoked, judged now" in revoked.stdout
    assert "the certificate is revoked (since" in revoked.stdout


def test_a_date_without_time_zone_is_read_as_japan_time(ca, folder, ca_pem):
    """PAdES (no signingTime) with /M lacking a UTC offset, as ISO 32000 allows: pdfsig and
    pyHanko call it valid, and so does mncctl, saying how it read the date."""
    signer = ca.issue("Naive Date Signer")
    claimed = dt.datetime(2026, 4, 1, 9, 30, 0)  # no tzinfo
    signed = sign_pdf_as(
        make_pdf(folder / "naive-in.pdf"), folder / "naive.pdf", pyhanko_signer(signer, ca),
        claimed=claimed, pades=True,
    )  # fmt: skip
    assert re.search(rb"/M \(D(:|\\072)20260401093000\)", signed.read_bytes())  # no offset
    assert "Signature is Valid" in pdfsig(signed)
    result = verify(signed, "--ca", ca_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "claimed:    2026-04-01 09:30:00 JST (as the signer's computer says; no time zone "
        "given, read as Japan's time)" in result.stdout
    )


def test_every_signature_is_reported_even_when_one_is_corrupt(ca, folder, ca_pem):
    first = sign_pdf_as(make_pdf(folder / "two-in.pdf"), folder / "one.pdf",
                        pyhanko_signer(ca.issue("First"), ca), field="First")  # fmt: skip
    data = bytearray(first.read_bytes())
    start = data.index(b"/Contents <") + len(b"/Contents <")
    data[start : start + 8] = b"FFFFFFFF"  # the CMS no longer parses
    broken = folder / "broken.pdf"
    broken.write_bytes(bytes(data))
    both = sign_pdf_as(broken, folder / "both.pdf", pyhanko_signer(ca.issue("Second"), ca),
                       field="Second")  # fmt: skip
    result = verify(both, "--ca", ca_pem)
    assert result.returncode == 7, result.stdout
    assert "2 signatures" in result.stdout
    assert "signature 1 (First): INVALID" in result.stdout
    assert "the signature cannot be read" in result.stdout
    assert "signature 2 (Second)" in result.stdout and "signed by:  CN=Second" in result.stdout


def test_every_signer_of_a_cms_is_reported(ca, folder, ca_pem):
    document = folder / "契約書.txt"
    document.write_text("contract\n")
    p7s = sign_cms_as(
        document, folder / "契約書.txt.p7s",
        pyhanko_signer(ca.issue("Alice"), ca), pyhanko_signer(ca.issue("Bob"), ca),
    )  # fmt: skip
    openssl = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(p7s), "-content",
         str(document), "-CAfile", str(ca_pem), "-purpose", "any", "-out", os.devnull],
        capture_output=True, text=True,
    )  # fmt: skip
    assert openssl.returncode == 0, openssl.stderr
    result = verify(document, "--ca", ca_pem)  # FILE.p7s found beside it
    assert result.returncode == 0, result.stdout
    assert "2 signatures" in result.stdout
    assert "signed by:  CN=Alice" in result.stdout and "signed by:  CN=Bob" in result.stdout


def test_an_unsigned_pdf_is_no_signature(folder):
    plain = make_pdf(folder / "plain.pdf")
    result = verify(plain)
    assert result.returncode == 10, result.stdout
    assert "result: no signature" in result.stdout
    assert "Revocation" not in result.stdout and "INVALID" not in result.stdout
    ja = verify(plain, lang="ja_JP.UTF-8")
    assert ja.returncode == 10 and "無効" not in ja.stdout and "失効" not in ja.stdout


def test_a_pdf_with_a_p7s_beside_it_is_checked_against_it(ca, folder, ca_pem):
    document = make_pdf(folder / "cms.pdf")
    sign_cms_as(document, folder / "cms.pdf.p7s", pyhanko_signer(ca.issue("Detached"), ca))
    result = verify(document, "--ca", ca_pem)
    assert result.returncode == 0, result.stdout
    assert f"signature file: {folder / 'cms.pdf.p7s'}" in result.stdout


def test_a_pdf_with_leading_bytes_is_explained(ca, folder, ca_pem):
    signed = sign_pdf_as(make_pdf(folder / "lead-in.pdf"), folder / "lead.pdf",
                         pyhanko_signer(ca.issue("Lead"), ca))  # fmt: skip
    junk = folder / "junk.pdf"
    junk.write_bytes(b"From: mailer\n" + signed.read_bytes())
    result = verify(junk, "--ca", ca_pem)
    assert result.returncode == 7
    assert "the file has 13 bytes before its PDF header (%PDF-)" in result.stdout


async def pyhanko_timestamp_time(path: Path, ca: SoftwareCA) -> dt.datetime | None:
    """pyHanko's own validation of the document timestamp: its time when valid and trusted."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_timestamp
    from pyhanko_certvalidator import ValidationContext

    with path.open("rb") as stream:
        (stamp,) = PdfFileReader(stream).embedded_timestamp_signatures
        status = await async_validate_pdf_timestamp(
            stamp, validation_context=ValidationContext(trust_roots=[ca.root.asn1()])
        )
    ok = status.intact and status.valid and status.trust_problem_indic is None
    return status.timestamp if ok else None


def test_a_document_timestamp_proves_the_earlier_signatures_time(ca, tsa, folder, ca_pem):
    signer = ca.issue("Archived Signer")
    signed = sign_pdf_as(make_pdf(folder / "lta-in.pdf"), folder / "lta-signed.pdf",
                         pyhanko_signer(signer, ca))  # fmt: skip
    stamped = add_document_timestamp(signed, folder / "lta.pdf", tsa)
    report = pdfsig(stamped)  # pdfsig checks the signature; it cannot check /DocTimeStamp
    assert report.count("Signature is Valid") == 1 and "Total document signed" in report, report
    assert asyncio.run(pyhanko_timestamp_time(stamped, ca)) is not None  # pyHanko checks it
    result = verify(stamped, "--ca", ca_pem, "--tsa-ca", ca_pem, "--json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    (stamp,) = data["timestamps"]
    assert stamp["intact"] and stamp["trusted"] and stamp["revision"] == 3
    (signature,) = data["signatures"]
    assert signature["timing"]["basis"] == "timestamp"
    assert signature["timing"]["timestamp_authority"] == "a document timestamp"
    text = verify(stamped, "--ca", ca_pem, "--tsa-ca", ca_pem)
    assert "document timestamp (" in text.stdout and ", intact" in text.stdout
