"""Pieces of the window that need no display: where a signed copy goes, and the texts of a
certificate's expiry (mncctl status's, in Japan's calendar)."""

from __future__ import annotations

import datetime as dt

from mncd.client import CertificateStatus
from mncd.window.app import WindowApplication  # noqa: F401 (gi, Gtk 4 and Adw 1 load)
from mncd.window.card_page import expires_text
from mncd.window.documents_page import signed_copy_path


def test_the_signed_copy_goes_beside_the_pdf_never_over_a_file(tmp_path):
    folder = tmp_path / "ダウンロード"
    folder.mkdir()
    source = folder / "申請書.pdf"
    source.write_bytes(b"%PDF-1.7\n")
    assert signed_copy_path(source) == folder / "申請書-signed.pdf"
    (folder / "申請書-signed.pdf").write_bytes(b"")
    (folder / "申請書-signed-2.pdf").symlink_to(folder / "nowhere")
    assert signed_copy_path(source) == folder / "申請書-signed-3.pdf"


def test_the_expiry_is_the_date_in_japan(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "en")
    # 14:59:59 UTC is 23:59:59 in Japan: still that day there, whatever the local zone.
    end = dt.datetime(2029, 5, 31, 14, 59, 59, tzinfo=dt.UTC)
    cert = CertificateStatus(present=True, state="valid", not_after=end, days_left=12)
    assert expires_text(cert) == "2029-05-31 (12 days left)"
    monkeypatch.setenv("LANGUAGE", "ja")
    assert expires_text(cert) == "2029-05-31(あと12日)"
    assert expires_text(cert._replace(days_left=None)) == "2029-05-31"


def test_without_pygobject_3_50_the_window_says_what_to_install():
    """Debian's own python3-gi (3.42) has no gi.events: the window says what it needs."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["/usr/bin/python3", "-c", "import mncd.window.app"],
        env={**os.environ, "PYTHONPATH": str(root), "LANGUAGE": "en"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the window needs PyGObject 3.50" in done.stderr
    assert "gir1.2-gtk-4.0" in done.stderr and "Traceback" not in done.stderr
