"""Pieces of the window that need no display: where a signed copy goes, the texts of a
certificate's expiry (mncctl status's, in Japan's calendar), what it says without PyGObject, and
its asyncio loop beside GTK's (a result handed to GTK's thread, a cancel, the shutdown)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import threading
from pathlib import Path

import pytest
from gi.repository import GLib

from mncd import errors
from mncd.client import CertificateStatus
from mncd.window.app import WindowApplication  # noqa: F401 (gi, Gtk 4 and Adw 1 load)
from mncd.window.card_page import expires_text
from mncd.window.documents_page import signed_copy_path
from mncd.window.loop import AsyncLoop


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
    assert expires_text(cert) == "2029-05-31（あと12日）"  # full-width brackets (the glossary)
    assert expires_text(cert._replace(days_left=None)) == "2029-05-31"


def test_without_pygobject_the_window_says_which_debian_packages_to_install():
    """No compiler: the window runs on Debian's own python3-gi; without it, it names it."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; sys.modules['gi'] = None; import mncd.window.app"],
        env={**os.environ, "PYTHONPATH": str(root), "LANGUAGE": "en"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the window needs PyGObject, GTK 4 and libadwaita" in done.stderr
    assert "python3-gi python3-cairo gir1.2-gtk-4.0 gir1.2-adw-1" in done.stderr
    assert "Traceback" not in done.stderr


# -- the asyncio loop beside GTK's (mncd.window.loop) -------------------------------------------


def spin(condition) -> None:
    """Run GLib's default main context (GTK's, on this thread) until ``condition()``."""
    context = GLib.MainContext.default()
    given_up = []
    guard = GLib.timeout_add_seconds(60, lambda: given_up.append(True))
    try:
        while not condition():
            assert not given_up, "nothing was handed to the GTK thread"
            context.iteration(True)
    finally:
        if not given_up:
            GLib.source_remove(guard)


@pytest.fixture
def bridge():
    loop = AsyncLoop()
    loop.start()
    yield loop
    loop.stop()


def test_a_coroutines_result_and_error_are_handed_to_the_gtk_thread(bridge):
    here = threading.get_ident()
    told = []

    async def work():
        await asyncio.sleep(0)
        return threading.get_ident()

    async def broken():
        raise errors.Busy("a PIN dialog is open")

    bridge.submit(work, lambda worker: told.append(("done", worker, threading.get_ident())))
    bridge.submit(broken, failed=lambda exc: told.append(("failed", exc, threading.get_ident())))
    show = bridge.to_gtk(lambda text: told.append(("drawn", text, threading.get_ident())))
    bridge.call(show, "状態: 有効")
    spin(lambda: len(told) == 3)
    by_kind = {kind: (value, thread) for kind, value, thread in told}
    worker, thread = by_kind["done"]
    assert worker != here and thread == here  # run on the asyncio thread, told on GTK's
    failure, thread = by_kind["failed"]
    assert isinstance(failure, errors.Busy) and thread == here
    assert by_kind["drawn"] == ("状態: 有効", here)


def test_cancel_ends_the_job_on_the_asyncio_thread_and_tells_nothing(bridge):
    started = threading.Event()
    cleaned, told, ended = [], [], []

    async def waits_for_a_pin():
        started.set()
        try:
            await asyncio.Event().wait()
        finally:  # where a job closes its own bus connection
            cleaned.append(threading.get_ident())

    job = bridge.submit(waits_for_a_pin, told.append, told.append, lambda: ended.append(True))
    assert started.wait(60)
    assert job.cancel()
    spin(lambda: ended and cleaned)
    assert told == [] and cleaned[0] != threading.get_ident()


def test_shutdown_closes_on_the_asyncio_thread_then_ends_the_loop_and_its_thread():
    bridge = AsyncLoop()
    bridge.start()
    started = threading.Event()
    order = []

    async def waits_for_a_pin():
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            order.append(("job ended", threading.current_thread().name))

    async def close_connection():
        await asyncio.sleep(0)
        order.append(("closed", threading.current_thread().name))

    bridge.submit(waits_for_a_pin)
    assert started.wait(60)
    bridge.stop(close_connection)
    assert order == [("closed", "mncd-window-asyncio"), ("job ended", "mncd-window-asyncio")]
    assert not bridge.running and bridge.loop.is_closed()
