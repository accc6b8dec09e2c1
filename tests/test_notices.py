"""The notice policy (most urgent thing once) and its texts, without a desktop."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from mncd.desktop import notices
from mncd.i18n import LOCALE_DIR
from mncd.jpki.summary import CertificateSummary

NOW = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC)


def summary(days: float) -> CertificateSummary:
    return CertificateSummary(
        serial="1a2b",
        fingerprint="ab" * 32,
        issuer="CN=test",
        not_before=NOW - dt.timedelta(days=1000),
        not_after=NOW + dt.timedelta(days=days),
        algorithm="rsa2048",
    )


def test_notice_log_survives_a_restart(tmp_path):
    path = tmp_path / "state" / "notices.json"
    log = notices.NoticeLog(path)
    assert log.mark("fp", {"renewal", "30"})
    assert not log.mark("fp", {"30"})
    again = notices.NoticeLog(path)
    assert again.shown("fp") == {"renewal", "30"}
    again.forget({"fp"})
    assert notices.NoticeLog(path).shown("fp") == set()
    assert path.stat().st_mode & 0o777 == 0o600


def test_corrupt_notice_log_starts_afresh(tmp_path):
    path = tmp_path / "notices.json"
    path.write_text("{not json")
    assert notices.NoticeLog(path).shown("fp") == set()


@pytest.mark.parametrize(
    ("lang", "summary_text", "body_text"),
    [
        ("ja_JP.UTF-8", "署名用電子証明書の有効期限まであと20日です", "2026年12月15日"),
        ("C", "Your signing certificate expires in 20 days", "2026-12-15"),
    ],
)
def test_expiry_texts_follow_the_locale(monkeypatch, lang, summary_text, body_text):
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", lang)
    message = notices.expiry_message("card", "sign", summary(20.2), "30", NOW)
    assert message.summary == summary_text
    assert body_text in message.body
    assert message.urgency == notices.NORMAL


def test_invalidated_text_names_the_kind_of_change_only(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "ja")
    message = notices.invalidated_message("card", "personal-data", ["address"])
    assert message.summary == "署名用電子証明書が失効しました"
    assert "住所" in message.body and message.urgency == notices.CRITICAL


def test_catalog_is_compiled_from_its_source(tmp_path):
    po = LOCALE_DIR / "ja" / "LC_MESSAGES" / "mncd.po"
    fresh = tmp_path / "mncd.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(fresh), str(po)], check=True)
    assert fresh.read_bytes() == po.with_suffix(".mo").read_bytes(), "run scripts/compile-catalogs"
