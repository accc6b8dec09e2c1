"""Unit tests of signed-document helpers: J-LIS anchors, private atomic outputs, certificate
checks, verification rules and exit codes. No bus, daemon or card."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pdfkit import software_key

from mncd.cli import errors as cli_errors
from mncd.cli.errors import ExitCode
from mncd.cli.verify import EXIT_CODES
from mncd.client import CertificateStatus, Status
from mncd.documents import CertificateUnusable, DocumentError, OutputExists
from mncd.documents.files import atomic_output, check_output, write_private
from mncd.documents.signer import JST, check_status
from mncd.documents.verdict import Intact, SignatureCheck, Timing, Validity, Verdict, Verification
from mncd.documents.verify import (
    TrustAnchor,
    check_certificate,
    claimed_time,
    jlis_trust_anchors,
)
from mncd.jpki import trust


def test_bundled_jlis_anchors_match_the_published_fingerprints():
    anchors = trust.jlis_anchors()
    assert sorted(a.file for a in anchors) == sorted(trust.PUBLISHED_FINGERPRINTS)
    assert [a.generation for a in trust.anchors_for("sign")] == [2015, 2019, 2023]
    assert [a.generation for a in trust.anchors_for("auth")] == [2015, 2023]
    for anchor in anchors:
        assert anchor.fingerprint == trust.PUBLISHED_FINGERPRINTS[anchor.file]
        assert hashlib.sha256(anchor.der).hexdigest().upper() == anchor.fingerprint


def test_an_anchor_that_differs_from_the_publication_is_refused():
    der = trust.anchors_for("sign")[0].der
    with pytest.raises(trust.AnchorError, match="published SHA-256 fingerprint"):
        trust.check_fingerprint("sign-ca-2015.pem", der[:-1] + bytes([der[-1] ^ 1]))
    with pytest.raises(trust.AnchorError, match="not a J-LIS anchor"):
        trust.check_fingerprint("other.pem", der)


def test_outputs_are_private_atomic_and_never_overwritten(tmp_path):
    target = tmp_path / "out.p7s"
    write_private(target, b"first")
    assert target.read_bytes() == b"first" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(OutputExists, match="not overwritten"):
        write_private(target, b"second")
    assert target.read_bytes() == b"first"
    write_private(target, b"second", force=True)
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "half.pdf") as stream:
        stream.write(b"half")
        raise RuntimeError("signing failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.p7s"]  # no leftovers
    with pytest.raises(DocumentError, match="is the input"):
        check_output(target, force=True, inputs=(target,))
    with pytest.raises(DocumentError, match="no such directory"):
        check_output(tmp_path / "missing" / "x.pdf")


def test_an_output_that_appears_meanwhile_is_kept(tmp_path):
    target = tmp_path / "out.pdf"
    with pytest.raises(OutputExists), atomic_output(target) as stream:
        stream.write(b"mine")
        target.write_bytes(b"theirs")  # another program, between the check and the end
    assert target.read_bytes() == b"theirs"


def _status(state: str, days: int = 100, held: bool = False) -> Status:
    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    sign = CertificateStatus(True, "card", state, not_after=not_after, certificate_held=held)
    return Status(state="card-present", sign=sign)


def japan_day(days: int) -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).astimezone(JST).date()


def test_status_refuses_expired_and_invalidated_and_warns_in_the_renewal_window(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    with pytest.raises(CertificateUnusable, match=r"^The signing certificate expired on ") as old:
        check_status(_status("expired", -2))
    assert old.value.state == "expired"
    assert f"expired on {japan_day(-2).isoformat()}: documents" in str(old.value)
    with pytest.raises(CertificateUnusable, match=r"^The signing certificate has been invalid"):
        check_status(_status("invalidated", held=True))
    warning = check_status(_status("expiring", 20)).warning
    assert warning.startswith(f"the signing certificate expires on {japan_day(20).isoformat()}")
    assert check_status(_status("valid")).warning == ""
    assert check_status(_status("unknown")).warning == ""


def test_certificate_texts_follow_the_locale_when_they_are_made(monkeypatch):
    """The same call in Japanese: only the text changes; the state stays a code."""
    monkeypatch.setenv("LANGUAGE", "ja")
    day = japan_day(-2)
    with pytest.raises(CertificateUnusable) as old:
        check_status(_status("expired", -2))
    assert old.value.state == "expired"
    assert str(old.value).startswith(
        f"署名用電子証明書の有効期限（{day.year}年{day.month}月{day.day}日）が切れています。"
    )
    with pytest.raises(CertificateUnusable) as invalidated:
        check_status(_status("invalidated", held=True))
    assert invalidated.value.state == "invalidated"
    assert str(invalidated.value).startswith("署名用電子証明書は失効しています。")
    assert cli_errors.exit_code(invalidated.value) == ExitCode.CERTIFICATE == 6
    soon = japan_day(20)
    assert check_status(_status("expiring", 20)).warning == (
        f"署名用電子証明書の有効期限は{soon.year}年{soon.month}月{soon.day}日です。"
        "マイナンバーカードをお持ちのうえ、お住まいの市区町村の窓口で更新してください。"
    )
    monkeypatch.setenv("LANGUAGE", "en")
    assert "municipal office" in check_status(_status("expiring", 20)).warning


def intact_check() -> SignatureCheck:
    """A signature whose bytes checked out: its certificate decides the rest."""
    return SignatureCheck("sig", intact=Intact(ok=True))


def test_certificate_rules_at_the_judged_time(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    _key, cert = software_key()
    der = cert.public_bytes(serialization.Encoding.DER)
    anchor = TrustAnchor(der, "a test CA")  # self-signed: its own issuer
    now = dt.datetime.now(dt.UTC)
    check = intact_check()
    check_certificate(check, der, now, [])
    assert check.verdict is Verdict.UNTRUSTED and "does not chain" in check.notes[0]
    late = intact_check()
    check_certificate(late, der, now + dt.timedelta(days=400), [])
    assert late.verdict is Verdict.EXPIRED and late.timing.validity is Validity.EXPIRED
    assert "no timestamp proves" in late.timing.notes[0]
    proven = intact_check()
    check_certificate(proven, der, now + dt.timedelta(days=400), [], proven=True)
    assert proven.verdict is Verdict.INVALID
    assert "not valid at the proven signing time" in proven.timing.problems[0]
    anchored = intact_check()
    check_certificate(anchored, der, now, [anchor])
    # The anchor is the certificate itself, which is no CA: a broken chain, not a valid one.
    assert anchored.verdict is Verdict.INVALID and "is not a CA" in anchored.trust.problems[0]


def test_a_document_signature_under_an_authentication_ca_is_not_trusted(monkeypatch):
    """J-LIS's user-authentication CAs certify logging in: never a document signature."""
    from signkit import SoftwareCA

    monkeypatch.setenv("LANGUAGE", "en")
    ca = SoftwareCA("Authentication CA")
    leaf = ca.issue("Holder")
    as_auth = intact_check()
    check_certificate(as_auth, leaf.der, None, [TrustAnchor(ca.root.der, "an auth CA", "auth")])
    assert as_auth.verdict is Verdict.INVALID and not as_auth.trust.ok
    assert "certifies logging in, not signing documents" in as_auth.trust.problems[0]
    as_sign = intact_check()
    check_certificate(as_sign, leaf.der, None, [TrustAnchor(ca.root.der, "a signing CA")])
    assert as_sign.verdict is Verdict.VALID and as_sign.trust.anchor == "a signing CA"
    # The bundled J-LIS anchors keep their kind.
    kinds = {anchor.purpose for anchor in jlis_trust_anchors()}
    assert kinds == {"sign", "auth"}


def test_a_claimed_time_without_zone_is_japan_time():
    timing = Timing()
    claimed_time(dt.datetime(2026, 4, 1, 9, 30), timing)
    assert timing.claimed_zone_assumed
    assert timing.claimed == dt.datetime(2026, 4, 1, 0, 30, tzinfo=dt.UTC)


def test_the_verdict_is_plain_data_for_json():
    result = Verification(Path("x.pdf"), "pdf", signatures=[SignatureCheck("s")])
    data = result.to_json()
    assert data["verdict"] == "invalid" and data["signatures"][0]["verdict"] == "invalid"
    assert Verification(Path("y.pdf"), "pdf").verdict is Verdict.NO_SIGNATURE
    json.dumps(data)  # JSON-ready


def test_verify_exit_codes_are_distinct():
    assert ExitCode.INVALID == 7 and ExitCode.UNTRUSTED == 8
    assert ExitCode.EXPIRED == 9 and ExitCode.NO_SIGNATURE == 10
    assert set(EXIT_CODES) == {verdict.value for verdict in Verdict}
    assert cli_errors.error_lines(DocumentError("x.pdf is not a PDF file")) == [
        "x.pdf is not a PDF file"
    ]


def test_an_invalidated_certificate_not_read_since_insertion_is_checked_after_the_password(
    monkeypatch,
):
    """The office may have written a new certificate since mncd read the invalidated one: the
    password is asked, and the certificate the card gives is refused only if it is the same."""
    from mncd.documents import signer

    monkeypatch.setenv("LANGUAGE", "en")
    warning = check_status(_status("invalidated")).warning
    assert "if your municipal office has issued a new one" in warning
    _key, cert = software_key()
    der = cert.public_bytes(serialization.Encoding.DER)
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(CertificateUnusable) as same:
        signer.check_certificate(der, now, invalidated=hashlib.sha256(der).hexdigest())
    assert same.value.state == "invalidated"
    assert cli_errors.exit_code(same.value) == ExitCode.CERTIFICATE
    assert signer.check_certificate(der, now, invalidated="ab" * 32).warning == ""


@pytest.mark.parametrize("lang", ["C.UTF-8", "ja_JP.UTF-8"])
def test_an_unreadable_certificate_from_the_card_is_a_document_error(monkeypatch, lang):
    from mncd.documents import signer

    monkeypatch.setenv("LANG", lang)
    monkeypatch.delenv("LANGUAGE", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    with pytest.raises(DocumentError) as raised:
        signer.check_certificate(b"\x30\x03\x02\x01\x01", dt.datetime.now(dt.UTC))
    expected = {
        "C.UTF-8": "The signing certificate from the card cannot be read: nothing was signed.",
        "ja_JP.UTF-8": "カードから受け取った署名用電子証明書を読み取れません。"
        "何も署名していません。",
    }
    assert str(raised.value) == expected[lang]
    assert cli_errors.exit_code(raised.value) == ExitCode.FAILED
