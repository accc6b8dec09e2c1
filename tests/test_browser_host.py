"""mncd-browser-host on the real stack: pcscd + vpcd + the virtual card, the daemon on a private
bus with a scripted pinentry, the host run as the browser runs it (framed JSON on stdin)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import subprocess
import threading
from typing import Any

import pytest
from bridgestack import (
    HOST,
    ask,
    b64decode,
    combination_code,
    daemon_env,
    digest_info,
    frame,
    run_host,
)
from busstack import (
    CallError,
    busctl,
    daemon_on_private_bus,
    gdbus_call,
    gvariant_bytes,
    unwrap,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from faultkit import verifies_with_pin

from mncd.browser import identity

pytestmark = pytest.mark.stack

SITE = "https://myna.test.go.jp"
NUMBER = "AB12345678901"
SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
UNREACHABLE = "マイナンバーカードのサービス（mncd）に接続できません。"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sandbox):
    """One daemon for the module; each test sets the pinentry's answers."""
    directory = tmp_path_factory.mktemp("bridge")
    entry, env = daemon_env(directory, sandbox.env)
    with daemon_on_private_bus(directory, env) as daemon:
        yield daemon, entry
    assert "Traceback" not in daemon.log
    assert NUMBER not in daemon.log


@pytest.fixture
def bridge(stack, insert_card):
    daemon, entry = stack
    entry.answer([])

    def insert(**settings):
        return insert_card(manufacture_number=NUMBER, **settings)

    return daemon, entry, insert


def recovered(certificate: bytes, signature: bytes) -> bytes:
    """What the card signed, recovered with the certificate's key (PKCS#1 v1.5)."""
    key = x509.load_der_x509_certificate(certificate).public_key()
    return key.recover_data_from_signature(signature, padding.PKCS1v15(), None)


def installation_file(daemon) -> os.stat_result:
    return (daemon.state_dir / "mncd" / "installation-id").stat()


def test_login_signs_the_given_bytes_with_the_cards_key(bridge):
    daemon, entry, insert = bridge
    card = insert()
    entry.answer(["1234"])
    given = digest_info(b"a login challenge from the site")
    answer = ask(
        daemon.bus.address,
        {
            "mode": "01",
            "service_id": "01",
            "digest": base64.b64encode(given).decode(),
            "origin": SITE,
        },
    )
    assert answer["result"] == "0", answer
    assert answer["mode"] == "01"
    certificate = b64decode(answer["certificate"])
    assert "=" not in answer["certificate"]
    assert certificate == card.certificates()["auth"]
    assert recovered(certificate, base64.b64decode(answer["signature"])) == given
    assert len(answer["uuid"]) == 32 and int(answer["uuid"], 16) >= 0
    assert answer["combination_code"] == combination_code(NUMBER, answer["uuid"])
    assert stat.S_IMODE(installation_file(daemon).st_mode) == 0o600
    assert verifies_with_pin(card.commands()) == 1
    # The dialog names the site and the program that started the host (here: pytest's python).
    description = entry.descriptions()[0]
    assert f"log in to {SITE}" in description
    assert "reports it" in description
    # The same installation id next time: the site ties the card to this installation.
    entry.answer(["1234"])
    again = ask(
        daemon.bus.address,
        {
            "mode": "01",
            "service_id": "01",
            "digest": base64.b64encode(given).decode(),
            "origin": SITE,
        },
    )
    assert again["uuid"] == answer["uuid"]
    assert again["combination_code"] == answer["combination_code"]


def test_sign_two_digests_with_one_verify(bridge):
    daemon, entry, insert = bridge
    card = insert()
    card.commands(clear=True)
    entry.answer(["ABC123"])
    given = [digest_info(b"first document"), digest_info(b"second document")]
    answer = ask(daemon.bus.address, {
        "mode": "02", "service_id": "01", "origin": SITE,
        "digest": [base64.b64encode(item).decode() for item in given],
    })  # fmt: skip
    assert answer["result"] == "0", answer
    certificate = b64decode(answer["certificate"])
    assert certificate == card.certificates()["sign"]
    assert [recovered(certificate, base64.b64decode(s)) for s in answer["signature"]] == given
    assert answer["combination_code"] == combination_code(NUMBER, answer["uuid"])
    commands = card.commands()
    assert verifies_with_pin(commands) == 1
    assert sum(command.startswith("802A") for command in commands) == 2
    assert entry.started() == 1
    assert f"sign for {SITE}" in entry.descriptions()[0]


def test_card_info_gives_the_four_fields_as_hex(bridge):
    daemon, entry, insert = bridge
    card = insert()
    entry.answer(["1234"])
    answer = ask(daemon.bus.address, {"mode": "04", "service_id": "01", "origin": SITE})
    assert answer["result"] == "0", answer
    text = {key: bytes.fromhex(answer[key]).decode() for key in ("name", "sex", "address",
                                                                  "birthday")}  # fmt: skip
    assert text == {
        "name": card.profile.name,
        "sex": card.profile.sex,
        "address": card.profile.address,
        "birthday": card.profile.birth_date.replace("-", ""),
    }
    assert answer["combination_code"] == combination_code(NUMBER, answer["uuid"])
    assert [e["text"] for e in entry.commands("SETPROMPT")] == ["card-info PIN"]
    assert SITE in entry.descriptions()[0]
    assert card.profile.name not in daemon.log and card.profile.address not in daemon.log


def test_check_and_close(bridge):
    daemon, entry, insert = bridge
    answer = ask(daemon.bus.address, {"mode": "check"})
    assert answer["result"] == "0"
    assert answer["version"] == identity.version()
    items = {item["item"]: item["ok"] for item in answer["diagnostics"]}
    assert items == {"daemon": True, "reader": True, "card": False}
    insert()
    answer = ask(daemon.bus.address, {"mode": "check", "origin": SITE})
    assert {item["item"]: item["ok"] for item in answer["diagnostics"]}["card"] is True
    assert ask(daemon.bus.address, {"mode": "05", "origin": SITE}) == {"result": "0", "mode": "05"}
    assert entry.started() == 0


def test_a_wrong_pin_is_asked_again_in_the_dialog_and_cancel_is_said(bridge):
    daemon, entry, insert = bridge
    card = insert()
    entry.answer(["9999", "cancel"])
    given = base64.b64encode(digest_info(b"x")).decode()
    answer = ask(daemon.bus.address, {"mode": "01", "service_id": "01", "digest": given,
                                      "origin": SITE})  # fmt: skip
    assert answer == {"result": "1", "mode": "01", "message": "操作は取り消されました。"}
    assert card.tries()["auth"] == 2
    assert any("2 tries left" in text for text in entry.descriptions())


def test_the_last_try_is_confirmed_first(bridge):
    daemon, entry, insert = bridge
    card = insert(auth_tries_left=1)
    entry.answer([False])
    given = base64.b64encode(digest_info(b"x")).decode()
    request = {"mode": "01", "service_id": "01", "digest": given, "origin": SITE}
    answer = ask(daemon.bus.address, request)
    assert answer["result"] == "1" and answer["message"] == "操作は取り消されました。"
    assert verifies_with_pin(card.commands()) == 0
    entry.answer([True, "1234"])
    assert ask(daemon.bus.address, request)["result"] == "0"
    assert len(entry.commands("CONFIRM")) == 1


def test_the_card_pulled_during_the_signature(bridge, sandbox):
    daemon, entry, insert = bridge
    insert()
    sandbox.control.pull_on("802A")
    entry.answer(["1234"])
    given = base64.b64encode(digest_info(b"x")).decode()
    answer = ask(daemon.bus.address, {"mode": "01", "service_id": "01", "digest": given,
                                      "origin": SITE})  # fmt: skip
    assert answer["result"] == "1"
    assert answer["message"].startswith("カードが取り外されました"), answer


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"mode": "99", "origin": SITE}, "不明な処理が要求されました。"),
        ({"mode": "01", "service_id": "01", "digest": "AAAA", "origin": SITE, "pin": "1234"},
         "要求に不明な項目があります。"),
        ({"mode": "01", "service_id": "01", "digest": "AAAA", "origin": "https://evil.example.jp"},
         "このサイトからの要求には応じられません。"),
        ({"mode": "01", "service_id": "01", "digest": "AAAA", "origin": "http://www.go.jp"},
         "このサイトからの要求には応じられません。"),
        ({"mode": "01", "service_id": "01", "digest": "not base64!", "origin": SITE},
         "署名するデータの形式が正しくありません。"),
        ({"mode": "01", "service_id": "01", "digest": ["AAAA"], "origin": SITE},
         "署名するデータの形式が正しくありません。"),
        ({"mode": "02", "service_id": "01", "digest": ["AAAA"] * 17, "origin": SITE},
         "署名するデータの数が正しくありません。"),
        ({"mode": "01", "service_id": "02", "digest": "AAAA", "origin": SITE},
         "サービスの指定が正しくありません。"),
        # Well-formed base64, but not a DigestInfo: the daemon refuses it before any dialog.
        ({"mode": "01", "service_id": "01", "digest": "AAAA", "origin": SITE},
         "要求の内容が正しくありません。"),
        ([1, 2, 3], "要求の形式が正しくありません。"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_clean_error_and_no_dialog(bridge, request_, message):
    daemon, entry, insert = bridge
    card = insert()
    answer = ask(daemon.bus.address, request_)
    assert answer["result"] == "1" and answer["message"] == message, answer
    assert entry.started() == 0
    assert verifies_with_pin(card.commands()) == 0


def test_bad_framing_and_other_extensions(bridge):
    daemon, _entry, _insert = bridge
    address = daemon.bus.address
    check = frame({"mode": "check"})
    # Another extension (Chromium), another add-on (Firefox), no argument at all.
    for argv in (["chrome-extension://abcdefghijklmnopabcdefghijklmnop/"],
                 ["/path/manifest.json", "someone-else@example.org"], []):  # fmt: skip
        answers, status = run_host(address, check, argv=argv)
        assert status == 1
        assert answers == [{"result": "1", "message": "この拡張機能からの要求には応じられません。"}]
    # Firefox's way of starting the host, with the bridge's add-on id, is answered.
    answers, status = run_host(
        address, check, argv=["/path/manifest.json", identity.firefox_addon_id()]
    )
    assert status == 0 and answers[0]["result"] == "0"
    huge = struct.pack("<I", 1 << 30)  # a gigabyte announced: refused before reading it
    for payload in (huge, struct.pack("<I", 20) + b"{", struct.pack("<I", 3) + b"\xff\xfe{",
                    b"\x01\x00"):  # fmt: skip
        answers, status = run_host(address, payload)
        assert status == 1
        assert answers == [{"result": "1", "message": "要求の形式が正しくありません。"}]
    # Several messages in one run are answered in order; an empty pipe ends quietly.
    answers, status = run_host(address, check + frame({"mode": "05", "origin": SITE}))
    assert [a["mode"] for a in answers] == ["check", "05"] and status == 0
    assert run_host(address, b"") == ([], 0)


def test_a_flood_of_requests_opens_one_dialog_at_a_time(bridge):
    daemon, entry, insert = bridge
    insert()
    entry.answer([{"delay": 0.3, "then": "1234"}] * 12)
    given = base64.b64encode(digest_info(b"flood")).decode()
    payload = frame({"mode": "01", "service_id": "01", "digest": given, "origin": SITE})
    answers: list[dict] = []

    def one() -> None:
        answers.extend(run_host(daemon.bus.address, payload)[0])

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 10
    busy = "別の暗証番号の入力画面が開いています。閉じてから、もう一度お試しください。"
    assert all(a["result"] == "0" or a["message"] == busy for a in answers), answers
    assert entry.overlaps() == 0
    assert entry.started() == sum(a["result"] == "0" for a in answers)


def test_daemon_stopped(tmp_path, sandbox, insert_card):
    insert_card(manufacture_number=NUMBER)
    _entry, env = daemon_env(tmp_path, sandbox.env)
    with daemon_on_private_bus(tmp_path, env) as daemon:
        daemon.stop()
        given = base64.b64encode(digest_info(b"x")).decode()
        answer = ask(daemon.bus.address, {"mode": "01", "service_id": "01", "digest": given,
                                          "origin": SITE})  # fmt: skip
        assert answer["result"] == "1" and answer["message"].startswith(UNREACHABLE)
        check = ask(daemon.bus.address, {"mode": "check"})
        assert {item["item"]: item["ok"] for item in check["diagnostics"]}["daemon"] is False


def test_the_host_is_an_entry_point_of_the_package():
    result = subprocess.run([str(HOST)], input=b"", capture_output=True, timeout=30)
    assert result.returncode == 1  # no extension named: refused


def busctl_bytes(data: bytes) -> list[str]:
    return [str(len(data)), *(str(b) for b in data)]


def sign_digest_infos(address: str, which: str, items: list[bytes], **options: str) -> Any:
    args = [which, str(len(items))]
    for item in items:
        args += busctl_bytes(item)
    args.append(str(len(options)))
    for name, value in options.items():
        kind = "b" if value in ("true", "false") else "s"
        args += [name.replace("_", "-"), kind, value]
    return unwrap(busctl(address, "SignDigestInfo", "saaya{sv}", *args)[0])


def test_the_api_to_a_third_party_caller(bridge):
    """busctl calls SignDigestInfo and ReadCardInfo with the PIN given (no dialog)."""
    daemon, entry, insert = bridge
    card = insert()
    address = daemon.bus.address
    given = [digest_info(b"one"), SHA1_PREFIX + hashlib.sha1(b"two").digest()]
    result = sign_digest_infos(address, "auth", given, pin="1234", combination_code="true")
    certificate = bytes(result["certificate"])
    assert certificate == card.certificates()["auth"]
    assert [recovered(certificate, bytes(s)) for s in result["signatures"]] == given
    assert result["combination-code"] == combination_code(NUMBER, result["installation-id"])
    without = sign_digest_infos(address, "auth", given[:1], pin="1234")
    assert set(without) == {"signatures", "certificate"}  # no code unless asked for
    info = unwrap(busctl(address, "ReadCardInfo", "a{sv}", "2", "pin", "s", "1234",
                         "interactive", "b", "false")[0])  # fmt: skip
    assert info == {"name": card.profile.name, "address": card.profile.address,
                    "birth-date": card.profile.birth_date.replace("-", ""),
                    "sex": card.profile.sex}  # fmt: skip
    assert entry.started() == 0


@pytest.mark.parametrize(
    ("which", "items", "options", "error"),
    [
        ("both", [digest_info(b"x")], {"pin": "1234"}, "InvalidArgument"),
        ("auth", [], {"pin": "1234"}, "InvalidArgument"),
        ("auth", [digest_info(b"x")] * 17, {"pin": "1234"}, "InvalidArgument"),
        ("auth", [b"\x30\x31" + bytes(49)], {"pin": "1234"}, "InvalidArgument"),
        ("auth", [digest_info(b"x") + b"\x00"], {"pin": "1234"}, "InvalidArgument"),
        ("sign", [SHA1_PREFIX + bytes(20)], {"pin": "ABC123"}, "InvalidArgument"),
        ("auth", [digest_info(b"x")], {"pin": "1234", "site": "javascript:alert(1)"},
         "InvalidArgument"),
        ("auth", [digest_info(b"x")], {"pin": "1234", "site": "https://a.go.jp\nOK"},
         "InvalidArgument"),
        ("auth", [digest_info(b"x")], {"pin": "1234", "colour": "red"}, "InvalidArgument"),
        ("auth", [digest_info(b"x")], {"pin": "12345"}, "PinFormat"),
    ],
)  # fmt: skip
def test_the_api_refuses_bad_input_before_the_card(bridge, which, items, options, error):
    daemon, entry, insert = bridge
    card = insert()
    arrays = "[" + ", ".join(gvariant_bytes(item) for item in items) + "]" if items else "@aay []"
    values = ", ".join(f"{json.dumps(k)}: <{json.dumps(v)}>" for k, v in options.items())
    with pytest.raises(CallError) as raised:
        gdbus_call(daemon.bus.address, "SignDigestInfo", which, arrays, "{" + values + "}")
    assert raised.value.name.endswith(f".Error.{error}"), raised.value
    assert verifies_with_pin(card.commands()) == 0
    assert entry.started() == 0


def test_a_card_that_refuses_the_signing_key_is_marked_invalidated(bridge):
    daemon, entry, insert = bridge
    insert(refuse_key="sign")
    entry.answer(["ABC123"])
    given = base64.b64encode(digest_info(b"x")).decode()
    answer = ask(daemon.bus.address, {"mode": "02", "service_id": "01", "digest": [given],
                                      "origin": SITE})  # fmt: skip
    assert answer["result"] == "1" and answer["mode"] == "02"
    assert busctl(daemon.bus.address, "GetStatus")  # the daemon is still up
    assert unwrap(busctl(daemon.bus.address, "GetStatus")[0])["sign"]["state"] == "invalidated"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"manufacture_record": False},
         "カードの製造番号を読み取れないため、このサービスには使えません。"),
        ({"auth_tries_left": 0},
         "暗証番号がロックされています。お住まいの市区町村の窓口で再設定してください。"),
        ({"auth_certificate": False}, "このカードには必要な電子証明書がありません。"),
        (None, "カードリーダーにマイナンバーカードを置いてください。"),
    ],
)  # fmt: skip
def test_cards_that_cannot_serve_are_told_in_japanese(bridge, settings, message):
    daemon, entry, insert = bridge
    if settings is not None:
        insert(**settings)
    entry.answer(["1234"])
    given = base64.b64encode(digest_info(b"x")).decode()
    answer = ask(daemon.bus.address, {"mode": "01", "service_id": "01", "digest": given,
                                      "origin": SITE})  # fmt: skip
    assert answer == {"result": "1", "mode": "01", "message": message}
