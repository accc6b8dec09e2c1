"""The desktop window (mncd-window) on the real stack: Xvfb, a private session bus, mncd on the
virtual card, dunst; the window read and pressed through AT-SPI as a screen reader would
(tests/atspi_reader.py with Debian's python3-pyatspi), the PIN dialog a scripted pinentry.

Screenshots of each page are kept in ``$MNCD_TEST_ARTIFACTS/window/`` (default: ``artifacts/``
in the checkout)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from busstack import gdbus_call, gvariant_bytes, status, wait_for
from conftest import READERS, wait_for_card
from cryptography.hazmat.primitives import serialization
from windowstack import WindowStack

from mncd.vcard.profile import CardProfile

ROOT = Path(__file__).resolve().parent.parent
JAPAN = ZoneInfo("Asia/Tokyo")
CARD = "window-card"


def artifacts() -> Path:
    base = Path(os.environ.get("MNCD_TEST_ARTIFACTS") or ROOT / "artifacts")
    return base / "window"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sandbox) -> Iterator[WindowStack]:
    sandbox.control.insert(CardProfile(), slot=0, card=CARD)
    wait_for_card(READERS[0], present=True)
    desktop = WindowStack(tmp_path_factory.mktemp("window"), sandbox.env)
    try:
        yield desktop
    finally:
        desktop.stop()
        if sandbox.control.remove(0):
            wait_for_card(READERS[0], present=False)
    assert "Traceback" not in desktop.daemon.log


def in_language(language: str, function, *args):
    """``function(*args)`` with mncd's catalog in ``language`` (ja or en)."""
    saved = os.environ.get("LANGUAGE")
    os.environ["LANGUAGE"] = language
    try:
        return function(*args)
    finally:
        if saved is None:
            del os.environ["LANGUAGE"]
        else:
            os.environ["LANGUAGE"] = saved


def japan_date(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).astimezone(JAPAN).date().isoformat()


def expected_texts(raw: dict) -> list[str]:
    """What GetStatus says, in the words of mncctl status (the catalog's language now)."""
    from mncd.client import Status
    from mncd.client.texts import (
        certificate_state_text,
        certificate_title,
        format_days_left,
        next_step,
        state_text,
    )

    parsed = Status.from_dbus(raw)
    texts = [state_text(raw["state"]), raw["reader"], raw["card_id"]]
    for which in ("auth", "sign"):
        cert = raw[which]
        texts.append(certificate_title(which))
        texts.append(certificate_state_text(cert["state"]))
        if cert["not_after"]:
            texts.append(japan_date(cert["not_after"]))  # the expiry date in Japan
            texts.append(format_days_left(cert["days_left"]))
        step = next_step(which, parsed.certificate(which))
        if step:
            texts.append(step)
    return texts


@pytest.mark.stack
@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("ja", ["利用者証明用電子証明書", "署名用電子証明書", "有効", "暗証番号", "3/3", "5/5"]),
        ("en", ["User-authentication certificate", "Signing certificate", "valid", "3/3", "5/5"]),
    ],
)
def test_the_window_shows_what_getstatus_says(stack, language, words):
    raw = read_status(stack)
    stack.start_window(language)
    expected = in_language(language, expected_texts, raw)
    assert str(raw["auth"]["days_left"]) in " ".join(expected)
    shown = stack.wait_for_text(*expected, *words)
    # Nothing of the other language's status words.
    other = "en" if language == "ja" else "ja"
    assert in_language(other, expected_texts, raw)[0] not in shown
    keep(stack.screenshot(f"card-{language}"))


@pytest.mark.stack
def test_the_window_follows_a_card_pulled_and_inserted(stack, sandbox):
    from mncd.client.texts import state_text

    stack.start_window("ja")
    card_id = read_status(stack)["card_id"]
    present, absent = (
        in_language("ja", state_text, "card-present"),
        in_language("ja", state_text, "no-card"),
    )
    stack.wait_for_text(present, card_id, "3/3")
    sandbox.control.remove(0)
    wait_for_card(READERS[0], present=False)
    shown = stack.wait_for_text(absent)
    assert present not in shown
    # The PIN counters now come from what mncd last knew: the card-info PIN only the card tells.
    assert "券面事項入力補助用の暗証番号: 3/3" not in shown
    sandbox.control.insert(slot=0, card=CARD)
    wait_for_card(READERS[0], present=True)
    shown = stack.wait_for_text(present, card_id, "券面事項入力補助用の暗証番号: 3/3")
    assert absent not in shown


@pytest.mark.stack
def test_a_notice_s_action_opens_the_window_at_its_matter(stack, sandbox):
    """A PIN locked: clicking the notice (its default action) starts the window through D-Bus
    activation, at the card page with the locked PIN's row focused."""
    stack.stop_window()
    stack.update_activation_environment("ja")
    stack.server.close_all()
    seen = len(stack.server.received())
    blocked = {**CardProfile().to_dict(), "auth_tries_left": 0}
    sandbox.control.insert(CardProfile.from_dict(blocked), slot=1, card="window-locked")
    try:
        wait_for_card(READERS[1], present=True)
        notice = wait_for(
            lambda: [n for n in stack.server.received()[seen:] if "PIN is locked" in n["summary"]],
            "the PIN-lock notice",
        )[0]
        assert '"default"' in notice["actions"] and '"details"' in notice["actions"]
        assert notice["desktop_entry"] == "io.github.mncd.Window"
        assert not stack.window_running()
        stack.server.action(0)
        wait_for(stack.window_running, "the window started by the notice's action", 60)
        stack.wait_for_window()
        stack.wait_for_text("利用者証明用電子証明書の暗証番号")
        wait_for(
            lambda: any("利用者証明用電子証明書の暗証番号" in name for name in stack.focused()),
            "the locked PIN's row to have the focus",
        )
        keep(stack.screenshot("notice-pin-locked"))
    finally:
        sandbox.control.remove(1)
        wait_for_card(READERS[1], present=False)


@pytest.mark.stack
def test_a_pin_changed_through_the_window(stack, sandbox):
    """Change…: the daemon's dialog asks the current PIN and the new one; the window never sees
    them, says it is done, and the card takes the new PIN."""
    from mncd.cli.pin_command import TEXT
    from mncd.cli.text import pin_label

    stack.start_window("ja")
    read_status(stack)
    label = in_language("ja", pin_label, "auth")
    stack.wait_for_text(f"{label}: 3/3")
    stack.answer(["1234", "8642"])
    sandbox.control.commands(CARD, True)
    stack.click(f"{label}を変更")
    done = in_language("ja", lambda: TEXT["changed"].format(label=label))
    stack.wait_for_text(done, f"{label}: 3/3")
    keep(stack.screenshot("pin-changed"))
    assert [c[:8] for c in sandbox.control.commands(CARD) if c.startswith("0024")] == ["00240180"]
    assert len(stack.pinentry.commands("GETPIN")) == 2  # the current PIN, the new one (twice)
    signed = gdbus_call(
        stack.bus.address, "Authenticate", gvariant_bytes(b"window"), "{'pin': <'8642'>}"
    )
    assert "byte" in signed or "b'" in signed
    assert sandbox.control.tries(CARD)["auth"] == 3


@pytest.mark.stack
def test_a_pdf_opened_from_a_file_manager_is_signed_beside_it(stack, sandbox, tmp_path):
    """A file manager opens a PDF with the window (D-Bus activation, Open): the sign page has it
    and offers its prepared signature fields; Sign: the daemon's dialog asks the signing
    password, the signed copy is saved beside the PDF and pdfsig finds it valid, in the field
    chosen; verifying it shows mncctl verify's report."""
    from test_documents_fields import form_with_fields

    from mncd.documents.report import verdict_text
    from mncd.documents.verdict import Verdict

    folder = tmp_path / "ダウンロード" / "申請 書類"
    folder.mkdir(parents=True)
    # A prepared form with two empty signature fields: the window offers them, the first chosen.
    source = form_with_fields(folder / "申請書.pdf", "ApplicantSignature", "AgentSignature")
    original = source.read_bytes()
    stack.stop_window()
    stack.update_activation_environment("ja")
    read_status(stack)
    stack.application("Open", f"[{json.dumps(source.as_uri())}]", "{}")
    stack.wait_for_window()
    stack.wait_for_text(str(source), "署名欄", "ApplicantSignature")
    keep(stack.screenshot("documents-ja"))
    stack.answer([CardProfile().sign_password])
    stack.click("PDF に署名する")
    output = folder / "申請書-signed.pdf"
    wait_for(output.exists, "the signed copy", 60)
    stack.wait_for_text(f"署名したコピーを {output} に保存しました")
    report = subprocess.run(["pdfsig", str(output)], capture_output=True, text=True).stdout
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Total document signed" in report
    assert "Signature Field Name: ApplicantSignature" in report, report
    assert source.read_bytes() == original  # the PDF itself is untouched

    stack.application("ActivateAction", "'verify'", f"[<{json.dumps(str(output))}>]", "{}")
    # The virtual card's CA is not J-LIS's: intact, not anchored, as mncctl verify says.
    untrusted = in_language("ja", verdict_text, Verdict.UNTRUSTED)
    stack.wait_for_text(untrusted, "申請書-signed.pdf")
    keep(stack.screenshot("verify-ja"))


@pytest.mark.stack
def test_the_checks_page_lists_the_doctors_findings_and_compares_personal_data(stack):
    from mncd.cli.check import TEXT as CHECK
    from mncd.cli.doctor import TEXT as DOCTOR

    stack.start_window("ja")
    read_status(stack)
    stack.application("ActivateAction", "'show'", "[<'doctor'>]", "{}")
    stack.click("診断を実行")
    pcscd = in_language("ja", lambda: f"{DOCTOR['level']['ok']} · {DOCTOR['name']['pcscd']}")
    reachable = in_language("ja", lambda: DOCTOR["pcscd-ok"])
    stack.wait_for_text(f"{pcscd}: {reachable}", in_language("ja", lambda: DOCTOR["name"]["card"]))
    # mncd does not hold the signing certificate yet: the signing password, then the card-info PIN.
    stack.answer([CardProfile().sign_password, CardProfile().card_info_pin])
    stack.click("個人情報を署名用電子証明書と照合")
    stack.wait_for_text(in_language("ja", lambda: CHECK["matches"]))
    keep(stack.screenshot("checks-ja"))


@pytest.mark.stack
def test_a_long_action_is_cancelled_and_the_dialog_closes(stack, sandbox):
    """Cancel while the daemon's dialog waits for the PIN: the window leaves the bus for that
    call, the daemon closes the dialog, and nothing reaches the card."""
    from mncd.cli.text import pin_label

    stack.start_window("ja")
    read_status(stack)
    label = in_language("ja", pin_label, "card-info")
    stack.wait_for_text(f"{label}: 3/3")
    stack.answer(["hold"])
    started = stack.pinentry.started()
    sandbox.control.commands(CARD, True)
    stack.click(f"{label}を変更")
    wait_for(lambda: stack.pinentry.started() > started, "the PIN dialog")
    stack.wait_for_text("進み具合")
    stack.click("キャンセル")
    wait_for(lambda: not pinentry_alive(stack), "the PIN dialog to close")
    # (VERIFY without data only reads the tries left.)
    sent = [c for c in sandbox.control.commands(CARD) if c.startswith(("0020", "0024"))]
    assert not [c for c in sent if c.startswith("0024") or len(c) > 8], sent
    stack.wait_for_text(f"{label}: 3/3")


def pinentry_alive(stack: WindowStack) -> bool:
    """Whether a scripted pinentry of this stack still runs."""
    result = subprocess.run(["pgrep", "-f", str(stack.pinentry.script)], capture_output=True)
    return result.returncode == 0


@pytest.mark.stack
def test_an_expiry_notice_links_jlis_renewal_page(stack, sandbox):
    """An expiring certificate's notice carries a link and an action to J-LIS's renewal page;
    the window's renewal action opens it in the user's browser."""
    from mncd.api import RENEWAL_INFO_URL

    stack.server.close_all()
    seen = len(stack.server.received())
    expiring = {**CardProfile().to_dict(), "not_after_days": 20, "name": "更新 太郎"}
    sandbox.control.insert(CardProfile.from_dict(expiring), slot=1, card="window-expiring")
    try:
        wait_for_card(READERS[1], present=True)
        notices = wait_for(
            lambda: [n for n in stack.server.received()[seen:] if "expires in" in n["summary"]],
            "the expiry notice",
        )
    finally:
        sandbox.control.remove(1)
        wait_for_card(READERS[1], present=False)
    assert '"renewal-info": "How to renew"' in notices[0]["actions"]
    assert f'<a href="{RENEWAL_INFO_URL}">How to renew</a>' in notices[0]["body"]
    stack.opened_uris.unlink(missing_ok=True)
    stack.application("ActivateAction", "'renewal-info'", "@av []", "{}")
    wait_for(stack.opened_uris.exists, "the browser to be asked", 30)
    assert stack.opened_uris.read_text().split() == [RENEWAL_INFO_URL]


@pytest.mark.stack
def test_a_certificate_is_shown(stack):
    """Show: the user-authentication certificate's details as mncctl cert show prints them."""
    stack.start_window("en")
    raw = read_status(stack)
    stack.click("Show the User-authentication certificate")
    stack.wait_for_text(raw["auth"]["serial"].upper(), raw["auth"]["fingerprint"], "SHA-256")


@pytest.mark.stack
def test_a_certificate_is_exported(stack, sandbox):
    """Export…: the file dialog offers auth.pem in the home folder; Save writes the PEM."""
    stack.start_window("en")
    read_status(stack)
    target = stack.home / "auth.pem"
    target.unlink(missing_ok=True)
    stack.click("Export the User-authentication certificate")
    wait_for(lambda: stack.reader("click", "mncd-window", "Save").returncode == 0, "the dialog")
    wait_for(target.exists, "the exported certificate")
    from cryptography import x509

    exported = x509.load_pem_x509_certificate(target.read_bytes())
    assert (
        exported.public_bytes(serialization.Encoding.DER)
        == sandbox.control.certificates(CARD)["auth"]
    )


#: The roles of the controls a person operates.
CONTROLS = ("push button", "toggle button", "page tab", "combo box", "check box", "text")


@pytest.mark.stack
def test_every_control_has_an_accessible_name_and_takes_the_keyboard(stack):
    stack.start_window("ja")
    read_status(stack)
    stack.wait_for_text("券面事項入力補助用の暗証番号を変更")
    controls = [node for node in stack.tree() if node["role"] in CONTROLS]
    assert len(controls) >= 15  # the pages' buttons, the page tabs, the window's own
    for control in controls:
        name = control["name"]
        assert name and not name.startswith(("Gtk", "Adw")), control
        assert control["focusable"], control


def read_status(stack: WindowStack) -> dict:
    """GetStatus (busctl) once the card in the reader has been read."""
    return wait_for(
        lambda: (raw := status(stack.bus.address))["state"] == "card-present" and raw,
        "the card to be read",
    )


def keep(path: Path) -> None:
    """Keep a screenshot as a test artifact."""
    target = artifacts()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target / path.name)
    assert path.stat().st_size > 10_000  # a drawn window, not an empty picture
