"""The browser bridge end to end: Debian's headless Chromium loads the unpacked extension,
``mncctl browser install --chromium PROFILE`` gives it the host, and a local HTTPS stand-in
for a government site at a ``*.go.jp`` name asks for a login, a signature and the card-info;
the daemon (private bus, scripted pinentry) and the virtual card behind pcscd + vpcd answer.
One browser serves the module."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from bridgestack import b64decode, combination_code, digest_info
from browserstack import OTHER_NAME, Chromium, bridge_session
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from faultkit import verifies_with_pin

from mncd.browser import identity

pytestmark = pytest.mark.stack

NUMBER = "CD98765432109"


@pytest.fixture(scope="module")
def session(tmp_path_factory, sandbox):
    def start(directory, home, profile, env, site):
        extension = home / ".local/share/mncd/browser/extension"
        return Chromium(directory, extension, profile, env, site)

    directory = tmp_path_factory.mktemp("chromium")
    with bridge_session(directory, sandbox.env, start) as session:
        yield session
    assert "Traceback" not in session.daemon.log
    assert NUMBER not in session.daemon.log


@pytest.fixture
def bridge(session, insert_card):
    session.entry.answer([])

    def insert(**settings):
        return insert_card(manufacture_number=NUMBER, **settings)

    return session, insert


def recovered(certificate: bytes, signature: bytes) -> bytes:
    key = x509.load_der_x509_certificate(certificate).public_key()
    return key.recover_data_from_signature(signature, padding.PKCS1v15(), None)


def request(mode: str, digest: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"mode": mode, "service_id": "01"}
    if digest is not None:
        message["digest"] = digest
    return message


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_page_finds_the_extension_and_a_windows_browser(session):
    hello = session.hello
    assert hello["origin"] == session.site.origin
    assert hello["inputs"] == {"extension": "24", "app": "29"}
    assert "Windows NT 10.0; Win64; x64" in hello["userAgent"]
    assert "Linux" not in hello["userAgent"]
    assert hello["platform"] == "Windows"
    assert hello["high"]["platform"] == "Windows"
    assert hello["high"]["bitness"] == "64"


def test_login(bridge):
    session, insert = bridge
    card = insert()
    session.entry.answer(["1234"])
    given = digest_info(b"login challenge")
    (answer,) = session.site.send(request("01", b64(given)))
    assert answer["result"] == "0", answer
    certificate = b64decode(answer["certificate"])
    assert certificate == card.certificates()["auth"]
    assert recovered(certificate, base64.b64decode(answer["signature"])) == given
    assert answer["combination_code"] == combination_code(NUMBER, answer["uuid"])
    # The dialog names the page's origin as the browser reported it, and the browser.
    (description,) = session.entry.descriptions()
    assert f"log in to {session.site.origin} (the site as " in description
    assert "chromium" in description.split("(the site as ")[1]
    assert verifies_with_pin(card.commands()) == 1


def test_sign_two_digests_one_verify(bridge):
    session, insert = bridge
    card = insert()
    card.commands(clear=True)
    session.entry.answer(["ABC123"])
    given = [digest_info(b"application form"), digest_info(b"photo")]
    (answer,) = session.site.send(request("02", [b64(item) for item in given]))
    assert answer["result"] == "0", answer
    certificate = b64decode(answer["certificate"])
    assert certificate == card.certificates()["sign"]
    assert [recovered(certificate, base64.b64decode(s)) for s in answer["signature"]] == given
    assert verifies_with_pin(card.commands()) == 1
    assert session.entry.started() == 1


def test_card_info(bridge):
    session, insert = bridge
    card = insert()
    session.entry.answer(["1234"])
    (answer,) = session.site.send(request("04"))
    assert answer["result"] == "0", answer
    assert bytes.fromhex(answer["name"]).decode() == card.profile.name
    assert bytes.fromhex(answer["address"]).decode() == card.profile.address
    assert bytes.fromhex(answer["birthday"]).decode() == card.profile.birth_date.replace("-", "")
    assert bytes.fromhex(answer["sex"]).decode() == card.profile.sex
    assert answer["combination_code"] == combination_code(NUMBER, answer["uuid"])


def test_wrong_pin_then_last_try(bridge):
    session, insert = bridge
    card = insert(auth_tries_left=2)
    session.entry.answer(["9999", True, "1234"])
    (answer,) = session.site.send(request("01", b64(digest_info(b"x"))))
    assert answer["result"] == "0", answer
    assert len(session.entry.commands("CONFIRM")) == 1  # the last try, confirmed
    assert card.tries()["auth"] == 3


def test_card_pulled(bridge, sandbox):
    session, insert = bridge
    insert()
    sandbox.control.pull_on("802A")
    session.entry.answer(["1234"])
    (answer,) = session.site.send(request("01", b64(digest_info(b"x"))))
    assert answer["result"] == "1"
    assert answer["message"].startswith("カードが取り外されました"), answer


def test_a_flooding_page_gets_one_dialog(bridge):
    session, insert = bridge
    insert()
    session.entry.answer([{"delay": 0.5, "then": "1234"}, "1234", "1234"])
    answers = session.site.send(request("01", b64(digest_info(b"flood"))), count=20)
    done = [a for a in answers if a["result"] == "0"]
    assert len(done) == 1
    assert all(a["message"].startswith("前の処理が終わっていません") for a in answers
               if a["result"] != "0")  # fmt: skip
    assert session.entry.started() == 1


def test_another_site_gets_nothing(session):
    session.site.jobs.put({"navigate": f"https://{OTHER_NAME}:{session.site.port}/other"})
    other = session.site.result()
    assert other == {"kind": "other", "answered": False, "inputs": False,
                     "userAgent": other["userAgent"]}  # fmt: skip
    assert "Linux" in other["userAgent"]
    back = session.site.result()  # the stand-in site again
    assert back["kind"] == "hello"


def test_host_missing(session):
    removed = session.mncctl("browser", "uninstall", "--chromium", str(session.profile))
    assert removed.returncode == 0, removed.stderr
    try:
        sent = request("01", b64(digest_info(b"x")))
        (answer,) = session.site.send(sent)
        assert answer["result"] == "1" and answer["errcode"] == "EW044-C300"
        assert answer["mode"] == "01" and answer["digest"] == sent["digest"]
    finally:
        installed = session.mncctl("browser", "install", "--chromium", str(session.profile))
        assert installed.returncode == 0, installed.stderr
    status = session.mncctl("browser", "status", "--chromium", str(session.profile))
    assert status.returncode == 0 and f"Chromium ({session.profile}): ok" in status.stdout


POPUP_STATE = """(() => {
  const items = [...document.querySelectorAll("#items li[id]")];
  return items.length >= 4 && items.map((li) => [li.id, li.className, li.textContent]);
})()"""


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en-US", {"host": "The bridge (mncd-browser-host) answers", "daemon": "mncd answers",
                   "reader": "A card reader is connected",
                   "card": "A My Number Card is in the reader"}),
        ("ja-JP", {"host": "ブラウザー連携（mncd-browser-host）が応答しました",
                   "daemon": "mncd に接続しました",
                   "reader": "カードリーダーが接続されています",
                   "card": "マイナンバーカードがあります"}),
    ],
)  # fmt: skip
def test_the_popup_says_what_answers(bridge, locale, expected):
    session, insert = bridge
    insert()
    popup = f"chrome-extension://{identity.chromium_extension_id()}/popup.html"
    items = session.browser.evaluate_in_tab(popup, POPUP_STATE, locale)
    assert {name: text for name, _, text in items} == expected
    assert all(kind == "ok" for _, kind, _ in items)


def test_daemon_stopped(bridge):
    """Last: the module's daemon is stopped."""
    session, insert = bridge
    insert()
    session.daemon.stop()
    (answer,) = session.site.send(request("01", b64(digest_info(b"x"))))
    assert answer["result"] == "1"
    assert answer["message"].startswith("マイナンバーカードのサービス（mncd）に接続できません")
    (check,) = session.site.send({"mode": "check"})
    assert {i["item"]: i["ok"] for i in check["diagnostics"]} == {
        "daemon": False, "reader": False, "card": False}  # fmt: skip
