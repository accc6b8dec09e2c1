"""The browser bridge in Debian's Firefox ESR, headless: the packed extension (.xpi, unsigned
add-ons allowed as ESR permits) finds the host through the manifest ``mncctl browser install``
writes in ``~/.mozilla/native-messaging-hosts``; the same stand-in site asks for a login, a
signature and the card-info. One browser serves the module."""

from __future__ import annotations

import base64

import pytest
from bridgestack import b64decode, combination_code, digest_info
from browserstack import Firefox, bridge_session
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from faultkit import verifies_with_pin

from mncd.browser import identity

pytestmark = pytest.mark.stack

NUMBER = "EF24680135792"


@pytest.fixture(scope="module")
def session(tmp_path_factory, sandbox):
    def start(directory, home, profile, env, site):
        packed = home / ".local/share/mncd/browser/mncd-browser-bridge.xpi"
        return Firefox(directory, packed, identity.firefox_addon_id(), env, site)

    directory = tmp_path_factory.mktemp("firefox")
    with bridge_session(directory, sandbox.env, start) as session:
        yield session
    assert "Traceback" not in session.daemon.log


@pytest.fixture
def bridge(session, insert_card):
    session.entry.answer([])
    return session, insert_card(manufacture_number=NUMBER)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def recovered(certificate: bytes, signature: bytes) -> bytes:
    key = x509.load_der_x509_certificate(certificate).public_key()
    return key.recover_data_from_signature(signature, padding.PKCS1v15(), None)


def test_the_page_finds_the_extension_and_a_windows_browser(session):
    hello = session.hello
    assert hello["inputs"] == {"extension": "24", "app": "29"}
    assert "Windows NT 10.0; Win64; x64; rv:" in hello["userAgent"]
    assert "Linux" not in hello["userAgent"]


def test_login_sign_and_card_info(bridge):
    session, card = bridge
    session.entry.answer(["1234"])
    given = digest_info(b"login challenge")
    (login,) = session.site.send({"mode": "01", "service_id": "01", "digest": b64(given)})
    assert login["result"] == "0", login
    certificate = b64decode(login["certificate"])
    assert certificate == card.certificates()["auth"]
    assert recovered(certificate, base64.b64decode(login["signature"])) == given
    assert login["combination_code"] == combination_code(NUMBER, login["uuid"])
    (description,) = session.entry.descriptions()
    assert f"log in to {session.site.origin} (the site as " in description
    assert "firefox" in description.split("(the site as ")[1]

    card.commands(clear=True)
    session.entry.answer(["ABC123"])
    documents = [digest_info(b"one"), digest_info(b"two")]
    (signed,) = session.site.send(
        {"mode": "02", "service_id": "01", "digest": [b64(d) for d in documents]}
    )
    assert signed["result"] == "0", signed
    certificate = b64decode(signed["certificate"])
    assert [recovered(certificate, base64.b64decode(s)) for s in signed["signature"]] == documents
    assert verifies_with_pin(card.commands()) == 1

    session.entry.answer(["1234"])
    (info,) = session.site.send({"mode": "04", "service_id": "01"})
    assert info["result"] == "0", info
    assert bytes.fromhex(info["name"]).decode() == card.profile.name
    assert info["uuid"] == login["uuid"]


def test_host_missing(session):
    removed = session.mncctl("browser", "uninstall")
    assert removed.returncode == 0, removed.stderr
    try:
        (answer,) = session.site.send({"mode": "01", "service_id": "01", "digest": "AAAA"})
        assert answer["result"] == "1" and answer["errcode"] == "EW044-C300"
    finally:
        assert session.mncctl("browser", "install").returncode == 0
