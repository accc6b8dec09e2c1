"""Real cards are not the textbook: every virtual-card switch through pcscd + vpcd + the daemon.

For each quirk a fresh card goes through the main flows a caller sees: status on insertion,
Authenticate and Sign (signatures verified against the returned certificates), a wrong PIN
(tries left) and a blocked PIN.
"""

from __future__ import annotations

import hashlib

import pytest
from busstack import CallError, daemon_on_private_bus, gdbus_call, gvariant_bytes, status
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from test_daemon_dbus import ERR, auth_call, parse_gvariant_arrays, wait_state

from mncd.vcard.profile import CardProfile

QUIRKS = {
    "default": {},
    "no-filler": {"filler": False},
    "blocked-6983": {"blocked_sw": "6983"},
    "blocked-6984": {"blocked_sw": "6984"},
    "verify-le-tolerated": {"verify_le_strict": False},
    "no-logout-on-reselect": {"reselect_logout": False},
    "t0-61xx-get-response": {"t0_get_response": True},
    "read-6cxx": {"wrong_le_6cxx": True},
    "atr-contact-2": {"atr": "contact-2"},
    "atr-contactless": {"atr": "contactless-1"},
    "atr-random-per-insertion": {"random_atr": True},
    "slow-card": {"apdu_delay_ms": 15.0, "sign_delay_ms": 150.0},
    "next-generation-provisional": CardProfile.preset("next-generation-provisional").to_dict(),
}


@pytest.fixture(scope="module")
def daemon(sandbox, tmp_path_factory):
    directory = tmp_path_factory.mktemp("quirks")
    with daemon_on_private_bus(directory, sandbox.env) as process:
        yield process
    assert "Traceback" not in process.log


def check(cert_der: bytes, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm):
    key = x509.load_der_x509_certificate(cert_der).public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)


@pytest.mark.parametrize("settings", QUIRKS.values(), ids=QUIRKS.keys())
def test_main_flows(daemon, insert_card, settings):
    card = insert_card(**settings)
    address = daemon.bus.address
    s = wait_state(address, "card-present")
    certificates = card.certificates()
    assert s["auth"]["fingerprint"] == hashlib.sha256(certificates["auth"]).hexdigest()
    assert s["auth"]["pin_tries_left"] == 3 and s["sign"]["pin_tries_left"] == 5
    ec_card = card.profile.algorithm == "ec-p384"
    assert s["auth"]["algorithm"] == ("ec-p384" if ec_card else "rsa2048")
    hash_name, algorithm = ("sha384", hashes.SHA384()) if ec_card else ("sha256", hashes.SHA256())

    signature, cert = auth_call(daemon, card.profile.auth_pin, hash_name, b"challenge")
    assert cert == certificates["auth"]
    check(cert, signature, b"challenge", algorithm)

    document = "文書 / document".encode()
    output = gdbus_call(
        address, "Sign", gvariant_bytes(document), hash_name,
        f"{{'pin': <'{card.profile.sign_password}'>}}",
    )  # fmt: skip
    signature, cert = parse_gvariant_arrays(output)
    assert cert == certificates["sign"]
    check(cert, signature, document, algorithm)
    assert status(address)["sign"]["state"] == "valid"

    with pytest.raises(CallError) as wrong:
        auth_call(daemon, "0000")
    assert ERR + "PinIncorrect" in wrong.value.message and "2 tries left" in wrong.value.message
    with pytest.raises(CallError):
        auth_call(daemon, "0001")  # another wrong PIN: one the card refused is not sent again
    with pytest.raises(CallError) as blocked:
        auth_call(daemon, "0002", allow_last_try=True)
    assert ERR + "PinBlocked" in blocked.value.message
    assert status(address)["auth"]["pin_tries_left"] == 0
    # The right PIN on a blocked card: still blocked, and nothing reaches the card.
    card.commands(clear=True)
    with pytest.raises(CallError) as still:
        auth_call(daemon, card.profile.auth_pin, allow_last_try=True)
    assert ERR + "PinBlocked" in still.value.message
    assert card.commands() == []
    # VERIFY always went out as a case-3 APDU (no Le), whatever the card tolerates.
    assert all(len(c) == 10 + 2 * int(c[8:10], 16) for c in card.commands() if c[2:4] == "20")


def test_verify_is_never_sent_with_le(daemon, insert_card):
    card = insert_card(verify_le_strict=True)
    wait_state(daemon.bus.address, "card-present")
    auth_call(daemon, card.profile.auth_pin)
    verifies = [c for c in card.commands() if c.startswith("00200080") and len(c) > 8]
    assert verifies and all(len(c) == 10 + 2 * int(c[8:10], 16) for c in verifies)


@pytest.mark.parametrize("token", ["android", "iphone", "juki"])
def test_tokens_mncd_cannot_serve(daemon, insert_card, token):
    insert_card(token=token)
    s = wait_state(daemon.bus.address, "card-present")
    assert s["token"] == token
    with pytest.raises(CallError) as err:
        auth_call(daemon, "1234")
    assert ERR + "NotSupported" in err.value.message


def test_card_without_signing_certificate(daemon, insert_card):
    card = insert_card(**CardProfile.preset("under-15").to_dict())
    s = wait_state(daemon.bus.address, "card-present")
    assert s["sign"]["present"] is False and s["auth"]["present"] is True
    with pytest.raises(CallError) as err:
        gdbus_call(daemon.bus.address, "Sign", gvariant_bytes(b"x"), "sha256",
                   "{'pin': <'ABC123'>}")  # fmt: skip
    assert ERR + "CertificateMissing" in err.value.message
    auth_call(daemon, card.profile.auth_pin)  # the authentication certificate still works


def test_not_a_my_number_card(daemon, insert_card):
    insert_card(jpki=False)
    s = wait_state(daemon.bus.address, "unknown-card")
    assert s["auth"]["source"] != "card"
    with pytest.raises(CallError) as err:
        auth_call(daemon, "1234")
    assert ERR + "NoCard" in err.value.message


def test_random_atr_changes_per_insertion_and_the_card_is_still_known(daemon, insert_card):
    card = insert_card(random_atr=True)
    first = card.control.call("state", card=card.name)["atr"]
    wait_state(daemon.bus.address, "card-present")
    card.remove()
    card.reinsert()
    second = card.control.call("state", card=card.name)["atr"]
    assert first != second
    s = wait_state(daemon.bus.address, "card-present")
    assert s["auth"]["fingerprint"] == hashlib.sha256(card.certificates()["auth"]).hexdigest()
