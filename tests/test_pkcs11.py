"""PKCS#11 through the daemon: Debian's p11-kit-client.so, OpenSC's pkcs11-tool and a ctypes
application against mncd's p11-kit RPC server, the virtual card in a real pcscd."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess

import pytest
from busstack import wait_for
from conftest import wait_for_card
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from faultkit import AUTHENTICATE_APDUS, SELECT_JPKI, operations, select_ef, verifies_with_pin
from pkcs11stack import AUTH_SLOT, AUTH_TOKEN, SIGN_SLOT, SIGN_TOKEN, pkcs11_daemon, wait_for_token

from mncd.card.digestinfo import digest_info

LOGIN_AUTH = (SELECT_JPKI, select_ef(0x0018), "VERIFY-EMPTY", "00200080")
LOGIN_SIGN = (SELECT_JPKI, select_ef(0x001B), "VERIFY-EMPTY", "00200080")
SIGN_APDUS = (SELECT_JPKI, select_ef(0x001B), "VERIFY-EMPTY", "00200080", select_ef(0x001A),
              "802A")  # fmt: skip
DATA = b"a document signed through PKCS#11"


@pytest.fixture
def served(tmp_path, sandbox):
    with pkcs11_daemon(tmp_path, sandbox.env) as daemon:
        yield daemon


def verify(cert_der: bytes, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm) -> None:
    key = x509.load_der_x509_certificate(cert_der).public_key()
    key.verify(signature, data, padding.PKCS1v15(), algorithm)


def openssl_verify(tmp_path, cert_der: bytes, signature: bytes, data: bytes, digest: str) -> str:
    """``openssl dgst -verify`` with the certificate's public key: its output."""
    (tmp_path / "cert.der").write_bytes(cert_der)
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "data").write_bytes(data)
    pem = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "cert.der"), "-pubkey",
         "-noout"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (tmp_path / "key.pem").write_text(pem)
    done = subprocess.run(
        ["openssl", "dgst", f"-{digest}", "-verify", str(tmp_path / "key.pem"), "-signature",
         str(tmp_path / "sig"), str(tmp_path / "data")], capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_tokens_objects_and_a_private_socket(served, card):
    wait_for_token(served)
    assert stat.S_IMODE(served.socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(served.socket.stat().st_mode) == 0o600
    listing = served.tool("-L")
    assert listing.returncode == 0, listing.stderr
    assert f"token label        : {AUTH_TOKEN}" in listing.stdout
    assert f"token label        : {SIGN_TOKEN}" in listing.stdout
    assert "PIN pad present" in listing.stdout  # a NULL PIN: the daemon asks
    assert "pin min/max        : 4/4" in listing.stdout
    assert "pin min/max        : 6/16" in listing.stdout

    auth = served.tool("--slot", str(AUTH_SLOT), "-O")
    assert auth.returncode == 0, auth.stderr
    for label, key_id in (("User Authentication Certificate", "01"),
                          ("User Authentication Certificate CA", "03")):  # fmt: skip
        assert f"label:      {label}\n" in auth.stdout
        assert f"ID:         {key_id}" in auth.stdout
    assert "Public Key Object; RSA 2048 bits" in auth.stdout
    assert "Private Key Object" not in auth.stdout  # only after C_Login

    # The signing certificate holds personal data: before C_Login only its CA is there.
    sign = served.tool("--slot", str(SIGN_SLOT), "-O")
    assert sign.returncode == 0, sign.stderr
    assert "Digital Signature Certificate CA" in sign.stdout
    assert "label:      Digital Signature Certificate\n" not in sign.stdout
    assert "Public Key Object" not in sign.stdout
    with_pin = served.tool("--slot", str(SIGN_SLOT), "--login", "--pin",
                           card.profile.sign_password, "-O")  # fmt: skip
    assert with_pin.returncode == 0, with_pin.stderr
    assert "label:      Digital Signature Certificate\n" in with_pin.stdout
    assert "always authenticate" in with_pin.stdout  # a PIN for every signature

    card.remove()
    wait_for(lambda: f"{AUTH_TOKEN}" not in served.tool("-L").stdout, "the token to go")


def test_both_tokens_sign_and_openssl_verifies(served, card, tmp_path):
    wait_for_token(served)
    certs = card.certificates()
    (tmp_path / "in").write_bytes(DATA)
    card.commands(clear=True)
    for slot, pin, key_id, mechanism, digest in (
        (AUTH_SLOT, card.profile.auth_pin, "01", "SHA256-RSA-PKCS", "sha256"),
        (AUTH_SLOT, card.profile.auth_pin, "01", "SHA384-RSA-PKCS", "sha384"),
        (SIGN_SLOT, card.profile.sign_password, "02", "SHA512-RSA-PKCS", "sha512"),
    ):
        out = tmp_path / f"{mechanism}.sig"
        signed = served.tool("--slot", str(slot), "--login", "--pin", pin, "--sign", "-m",
                             mechanism, "--id", key_id, "-i", str(tmp_path / "in"), "-o",
                             str(out))  # fmt: skip
        assert signed.returncode == 0, signed.stderr
        cert = certs["auth" if key_id == "01" else "sign"]
        assert "Verified OK" in openssl_verify(tmp_path, cert, out.read_bytes(), DATA, digest)

    # CKM_RSA_PKCS: the application hands over a DigestInfo (TLS 1.2, NSS, OpenSSH do).
    (tmp_path / "di").write_bytes(digest_info("sha256", hashlib.sha256(DATA).digest()))
    signed = served.tool("--slot", str(AUTH_SLOT), "--login", "--pin", card.profile.auth_pin,
                         "--sign", "-m", "RSA-PKCS", "--id", "01", "-i", str(tmp_path / "di"),
                         "-o", str(tmp_path / "raw.sig"))  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    verify(certs["auth"], (tmp_path / "raw.sig").read_bytes(), DATA, hashes.SHA256())

    # Each login is one card operation; each C_Sign one more, of 6 APDUs with the live
    # counter; the signing certificate is read once, with the first signing login.
    ops = operations(card.commands())
    signs = [op for op in ops if op[-1] == "802A"]
    assert signs == [AUTHENTICATE_APDUS, AUTHENTICATE_APDUS, SIGN_APDUS, AUTHENTICATE_APDUS]
    assert all(op in (LOGIN_AUTH, LOGIN_SIGN) or op[:4] == LOGIN_SIGN for op in ops
               if op[-1] != "802A")  # fmt: skip
    assert card.tries()["auth"] == 3 and card.tries()["sign"] == 5


def test_sha1_is_signed_as_legacy_by_the_authentication_key_only(served, card, tmp_path):
    """Legacy peers (ssh-rsa, TLS 1.2 servers) and ``pkcs11-tool --test`` ask for SHA-1: the
    authentication key signs it, logged as legacy; the signing key refuses it as before."""
    wait_for_token(served)
    assert "SHA1-RSA-PKCS" in served.tool("--slot", str(AUTH_SLOT), "-M").stdout
    assert "SHA1-RSA-PKCS" not in served.tool("--slot", str(SIGN_SLOT), "-M").stdout
    tested = served.tool("--slot", str(AUTH_SLOT), "--login", "--pin", card.profile.auth_pin,
                         "--test")  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for line in ("RNG not available", "all 4 signature functions seem to work",
                 "    RSA-PKCS: OK", "    SHA1-RSA-PKCS: OK", "    SHA256-RSA-PKCS: OK",
                 "No errors"):  # fmt: skip
        assert line in tested.stdout, tested.stdout

    card.commands(clear=True)
    sha1 = hashlib.sha1(DATA).digest()
    answer = served.application([
        ["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
        ["sign", {"id": "01", "mechanism": "SHA1-RSA-PKCS", "data": DATA.hex()}],
        ["sign", {"id": "01", "mechanism": "RSA-PKCS", "data": digest_info("sha1", sha1).hex()}],
    ])  # fmt: skip
    assert "error" not in answer, answer
    for signature in answer["results"][2:]:
        verify(card.certificates()["auth"], bytes.fromhex(signature), DATA, hashes.SHA1())
    # The same card operation as any signature: 6 APDUs each.
    assert operations(card.commands()) == [LOGIN_AUTH, AUTHENTICATE_APDUS, AUTHENTICATE_APDUS]
    legacy = [line for line in served.daemon.log.splitlines()
              if "SHA-1, signed as legacy" in line]  # fmt: skip
    assert len([line for line in legacy if "pkcs11_client.py" in line]) == 2, legacy
    assert all(line.startswith("INFO ") and "the auth key" in line for line in legacy), legacy
    assert sha1.hex() not in served.daemon.log

    # The signing key: a SHA-1 DigestInfo is invalid data, CKM_SHA1_RSA_PKCS no mechanism of
    # it; neither reaches the card.
    password = card.profile.sign_password
    card.commands(clear=True)
    answer = served.application([
        ["open", {"slot": SIGN_SLOT}], ["login", {"pin": password}],
        ["sign", {"id": "02", "mechanism": "RSA-PKCS", "data": digest_info("sha1", sha1).hex(),
                  "context_login": True, "context_pin": password, "tolerate": True}],
        ["sign", {"id": "02", "mechanism": "SHA1-RSA-PKCS", "data": DATA.hex(),
                  "context_login": True, "context_pin": password, "tolerate": True}],
    ])  # fmt: skip
    assert answer["results"][2:] == ["CKR_DATA_INVALID", "CKR_MECHANISM_INVALID"], answer
    assert verifies_with_pin(card.commands()) == 1  # the login alone
    refused = served.tool("--slot", str(SIGN_SLOT), "--login", "--pin", password, "--test")
    assert refused.returncode != 0 and "CKR_DATA_INVALID" in refused.stderr, refused.stderr


def test_the_auth_pin_is_held_for_the_login_only(served, card):
    wait_for_token(served)
    card.commands(clear=True)
    data = DATA.hex()
    answer = served.application([
        ["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
        ["sign", {"id": "01", "mechanism": "SHA256-RSA-PKCS", "data": data}],
        ["sign", {"id": "01", "mechanism": "SHA256-RSA-PKCS", "data": data}],
        ["logout", {}], ["find", {"class": 3}],
    ])  # fmt: skip
    assert "error" not in answer, answer
    for signature in answer["results"][2:4]:
        verify(card.certificates()["auth"], bytes.fromhex(signature), DATA, hashes.SHA256())
    assert answer["results"][5] == []  # logged out: the private key is hidden again
    # The login and two signatures: three card operations, the PIN sent with each (held in
    # the daemon's memory), the card reset after each; no dialog.
    assert operations(card.commands()) == [LOGIN_AUTH, AUTHENTICATE_APDUS, AUTHENTICATE_APDUS]
    assert served.pinentry.started() == 0


def test_the_signing_key_wants_a_pin_for_every_signature(tmp_path, sandbox, card):
    password = card.profile.sign_password
    with pkcs11_daemon(tmp_path, sandbox.env, [password]) as served:
        wait_for_token(served, SIGN_SLOT)
        data = DATA.hex()
        answer = served.application([
            ["open", {"slot": SIGN_SLOT}], ["login", {"pin": password}],
            ["sign", {"id": "02", "mechanism": "SHA256-RSA-PKCS", "data": data,
                      "context_login": True, "context_pin": password}],
            # No PIN for this one: the daemon asks in its own dialog.
            ["sign", {"id": "02", "mechanism": "SHA256-RSA-PKCS", "data": data}],
            ["cert", {"id": "02"}],
        ])  # fmt: skip
        assert "error" not in answer, answer
        cert = bytes.fromhex(answer["results"][4])
        assert cert == card.certificates()["sign"]
        for signature in answer["results"][2:4]:
            verify(cert, bytes.fromhex(signature), DATA, hashes.SHA256())
        (description,) = served.pinentry.descriptions()
        assert "pkcs11_client.py" in description and "sign a document" in description
    assert verifies_with_pin(card.commands()) == 3


def test_bad_wrong_and_last_pins(tmp_path, sandbox, insert_card):
    card = insert_card(auth_tries_left=2)
    with pkcs11_daemon(tmp_path, sandbox.env, [False, True]) as served:
        wait_for_token(served)
        card.commands(clear=True)
        login = ("--slot", str(AUTH_SLOT), "--login", "-O", "--pin")
        for pin, error in (("12345", "CKR_PIN_LEN_RANGE"), ("12a4", "CKR_PIN_INVALID"),
                           ("１２３４", "CKR_PIN_INVALID")):  # fmt: skip
            refused = served.tool(*login, pin)
            assert refused.returncode != 0 and error in refused.stderr, refused.stderr
        assert verifies_with_pin(card.commands()) == 0  # never reached the card

        wrong = served.tool(*login, "9999")
        assert wrong.returncode != 0 and "CKR_PIN_INCORRECT" in wrong.stderr
        assert card.tries()["auth"] == 1
        assert "user PIN count low" in served.tool("-L").stdout
        (token,) = served.application([["token", {"slot": AUTH_SLOT}]])["results"]
        assert token["flags"] & 0x2_0000  # CKF_USER_PIN_FINAL_TRY
        # The last try: the user is asked in the daemon's dialog; "no" sends nothing.
        declined = served.tool(*login, card.profile.auth_pin)
        assert declined.returncode != 0 and "CKR_FUNCTION_CANCELED" in declined.stderr
        assert card.tries()["auth"] == 1 and verifies_with_pin(card.commands()) == 1
        accepted = served.tool(*login, card.profile.auth_pin)
        assert accepted.returncode == 0, accepted.stderr
        assert card.tries()["auth"] == 3
        confirms = served.pinentry.commands("CONFIRM")
        assert len(confirms) == 2
        assert any("pkcs11-tool" in text for text in served.pinentry.descriptions())


def test_a_null_pin_is_asked_in_the_daemons_dialog(tmp_path, sandbox, card):
    with pkcs11_daemon(tmp_path, sandbox.env, ["0000", card.profile.auth_pin]) as served:
        wait_for_token(served)
        (tmp_path / "in").write_bytes(DATA)
        signed = served.tool("--slot", str(AUTH_SLOT), "--login", "--sign", "-m",
                             "SHA256-RSA-PKCS", "--id", "01", "-i", str(tmp_path / "in"), "-o",
                             str(tmp_path / "sig"))  # fmt: skip
        assert signed.returncode == 0, signed.stderr
        verify(card.certificates()["auth"], (tmp_path / "sig").read_bytes(), DATA,
               hashes.SHA256())  # fmt: skip
        first, second = served.pinentry.descriptions()[:2]
        assert "/usr/bin/pkcs11-tool" in first and "3 tries left" in first
        assert "2 tries left" in second  # a wrong PIN is asked again, with the real count
    assert card.tries()["auth"] == 3


def test_a_card_pulled_during_c_sign(served, card, tmp_path):
    wait_for_token(served)
    card.control.pull_on("802A", slot=card.slot)
    answer = served.application([
        ["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
        ["sign", {"id": "01", "mechanism": "SHA256-RSA-PKCS", "data": DATA.hex()}],
    ])  # fmt: skip
    assert answer["error"] == "CKR_DEVICE_REMOVED", answer
    wait_for_card(card.reader, present=False)
    assert card.tries()["auth"] == 3
    card.reinsert()
    wait_for_token(served)
    (tmp_path / "in").write_bytes(DATA)
    again = served.tool("--slot", str(AUTH_SLOT), "--login", "--pin", card.profile.auth_pin,
                        "--sign", "-m", "SHA256-RSA-PKCS", "--id", "01", "-i",
                        str(tmp_path / "in"), "-o", str(tmp_path / "sig"))  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_a_refused_pin_is_not_sent_again(tmp_path, sandbox, card):
    """Applications repeat a failed signature with the same PIN (pkcs11-tool does): the card
    refused it, so the daemon refuses it without spending another try."""
    with pkcs11_daemon(tmp_path, sandbox.env) as served:
        wait_for_token(served, SIGN_SLOT)
        password = card.profile.sign_password
        wrong = {"id": "02", "mechanism": "SHA256-RSA-PKCS", "data": DATA.hex(),
                 "context_login": True, "context_pin": "WRONG1", "tolerate": True}  # fmt: skip
        card.commands(clear=True)
        answer = served.application([
            ["open", {"slot": SIGN_SLOT}], ["login", {"pin": password}],
            ["sign", wrong], ["sign", wrong],
        ])  # fmt: skip
        assert answer["results"][2:] == ["CKR_PIN_INCORRECT", "CKR_PIN_INCORRECT"], answer
    assert card.tries()["sign"] == 4
    assert verifies_with_pin(card.commands()) == 2  # the login and one wrong PIN


def test_slot_events_follow_the_card(served, insert_card):
    assert served.application([["wait", {"flags": 1}]])["error"] == "CKR_NO_EVENT"
    waiting = served.start_application([["slots", {}], ["wait", {}], ["slots", {}]])
    connected = "PKCS#11 application connected"
    wait_for(lambda: served.daemon.log.count(connected) == 2, "the application")
    insert_card()
    out, err = waiting.communicate(timeout=60)
    answer = json.loads(out)
    assert "error" not in answer, (out, err)
    before, event, after = answer["results"]
    assert before == [] and event in (AUTH_SLOT, SIGN_SLOT) and after == [AUTH_SLOT, SIGN_SLOT]


def test_the_next_generation_ec_card_signs_ecdsa(served, insert_card):
    """The provisional next-generation profile (ECDSA P-384): CKM_ECDSA over a digest the
    application made, answered as PKCS#11 wants it (r || s), verified against the card's key."""
    card = insert_card(algorithm="ec-p384")
    wait_for_token(served)
    mechanisms = served.tool("--slot", str(AUTH_SLOT), "-M")
    assert "ECDSA" in mechanisms.stdout and "RSA" not in mechanisms.stdout, mechanisms.stdout
    digest = hashlib.sha384(DATA).digest()
    answer = served.application([
        ["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
        ["sign", {"id": "01", "mechanism": "ECDSA", "data": digest.hex()}],
    ])  # fmt: skip
    assert "error" not in answer, answer
    raw = bytes.fromhex(answer["results"][2])
    assert len(raw) == 96
    signature = encode_dss_signature(int.from_bytes(raw[:48], "big"),
                                     int.from_bytes(raw[48:], "big"))  # fmt: skip
    key = x509.load_der_x509_certificate(card.certificates()["auth"]).public_key()
    key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA384())))


def test_a_pin_changed_over_d_bus_ends_every_login_without_spending_a_try(served, card):
    """Two applications logged in (a browser and an ssh-agent, say); the PIN is changed with
    mncctl over D-Bus: the next C_Sign of each finds itself logged out instead of sending the
    old PIN, and the card's counter stays full; logged in with the new PIN, they sign."""
    from test_mncctl_pin_change import mncctl

    wait_for_token(served)
    sign = {"id": "01", "mechanism": "SHA256-RSA-PKCS", "data": DATA.hex(), "tolerate": True}
    steps = [["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
             ["sign", sign], ["pause", {}], ["sign", {**sign, "same_key": True}]]  # fmt: skip
    applications = [served.start_application(steps) for _ in range(2)]
    signed = "PKCS#11 C_Sign with the auth key"
    wait_for(lambda: served.daemon.log.count(signed) == 2, "both applications to sign")
    changed = mncctl(served.daemon.bus.address, "pin", "change", "auth", "--pin-stdin",
                     stdin=f"{card.profile.auth_pin}\n9753\n")  # fmt: skip
    assert changed.returncode == 0, changed.stdout + changed.stderr
    card.commands(clear=True)
    for application in applications:
        out, err = application.communicate("\n", timeout=60)
        assert out, err
        answer = json.loads(out)
        assert "error" not in answer, (out, err)
        assert answer["results"][2] != "CKR_PIN_INCORRECT"
        assert answer["results"][4] == "CKR_USER_NOT_LOGGED_IN", answer
    assert verifies_with_pin(card.commands()) == 0
    assert card.tries()["auth"] == 3
    assert served.daemon.log.count("PKCS#11 login of") >= 2
    again = served.application([
        ["open", {"slot": AUTH_SLOT}], ["login", {"pin": "9753"}], ["sign", sign],
    ])  # fmt: skip
    assert "error" not in answer and len(bytes.fromhex(again["results"][2])) == 256, again


def test_a_pin_changed_behind_mncds_back_costs_one_try_not_one_per_application(served, card):
    """Another program changed the PIN: the first application's C_Sign sends the PIN it holds
    and the card refuses it; every other login holding that PIN ends without sending it."""
    from mncd.card.errors import CardResetError
    from mncd.card.jpki import AUTH_KEY, JpkiSession
    from mncd.card.pcsc import PcscContext

    wait_for_token(served)
    sign = {"id": "01", "mechanism": "SHA256-RSA-PKCS", "data": DATA.hex(), "tolerate": True}
    steps = [["open", {"slot": AUTH_SLOT}], ["login", {"pin": card.profile.auth_pin}],
             ["sign", sign], ["pause", {}], ["sign", {**sign, "same_key": True}]]  # fmt: skip
    first, second = (served.start_application(steps) for _ in range(2))
    signed = "PKCS#11 C_Sign with the auth key"
    wait_for(lambda: served.daemon.log.count(signed) == 2, "both applications to sign")
    with PcscContext() as context:
        for _ in range(3):  # the daemon just reset the card: a new connection may be told once
            try:
                with context.connect(card.reader) as conn, conn.transaction(reset_after=True):
                    session = JpkiSession(conn)
                    session.verify_pin(AUTH_KEY, card.profile.auth_pin)
                    session.change_pin(AUTH_KEY, "9753")
                break
            except CardResetError:
                continue
    answers = []
    for application in (first, second):  # one after the other
        out, err = application.communicate("\n", timeout=60)
        assert out, err
        answers.append(json.loads(out)["results"][4])
    assert answers == ["CKR_PIN_INCORRECT", "CKR_USER_NOT_LOGGED_IN"], served.daemon.log[-3000:]
    assert card.tries()["auth"] == 2
