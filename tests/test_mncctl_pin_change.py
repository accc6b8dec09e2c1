"""``mncctl pin status`` and ``mncctl pin change`` for people: on a real terminal (tmux), with
``--pin-stdin``, and in a desktop session where the daemon's dialog asks. The real daemon, bus,
pcscd and virtual card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from busstack import daemon_on_private_bus, wait_for
from faultkit import verifies_with_pin
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state
from test_pin_change import spend_card_info_try, spend_sign_tries
from test_pingate import spend_tries

MNCCTL = str(Path(sys.executable).with_name("mncctl"))
CURRENT_PROMPT = "Current user-authentication PIN"
NEW_PROMPT = "New user-authentication PIN"
AGAIN_PROMPT = "Type it again"
UNCONFIRMED = (
    "Note: mncctl changes a PIN with the command other implementations use; it has not been "
    "confirmed on real cards."
)


def mncctl(address: str, *args: str, stdin: str | None = None, **env: str):
    """mncctl in English (its own state, such as the cards whose PIN it changed, beside the
    bus's files)."""
    state = str(Path(address.split("=", 1)[1].split(",")[0]).parent)
    environment = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANG": "C.UTF-8",
                   "LANGUAGE": "", "XDG_STATE_HOME": state, **env}  # fmt: skip
    if "DISPLAY" not in env:
        environment.pop("DISPLAY", None)
        environment.pop("WAYLAND_DISPLAY", None)
    return subprocess.run(
        [MNCCTL, *args], input=stdin, capture_output=True, text=True, timeout=90, env=environment
    )


def shown(term, text: str, count: int) -> str:
    """Wait until ``text`` is on the terminal ``count`` times (a prompt asked again)."""
    return wait_for(lambda: term.screen() if term.screen().count(text) >= count else None, text)


def test_pin_status_shows_the_live_counters(daemon, card):
    address = daemon.bus.address
    wait_state(address, "card-present")
    spend_tries(card, 1)  # another program, behind mncd's back
    spend_sign_tries(card, 3)
    spend_card_info_try(card)
    result = mncctl(address, "pin", "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  User-authentication PIN: 2/3" in lines
    assert "  Signing password: 2/5" in lines
    assert "  Card-info PIN: 2/3" in lines
    as_json = json.loads(mncctl(address, "pin", "status", "--json").stdout)
    assert as_json["card-info"] == {"present": True, "tries_left": 2, "max_tries": 3}
    assert card.tries() == {"auth": 2, "sign": 2, "card_info": 2}


def test_pin_status_of_a_blocked_pin_says_what_to_do(daemon, insert_card):
    insert_card(card_info_tries_left=0)
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "pin", "status")
    assert result.returncode == 0, result.stderr
    assert "  Card-info PIN: 0/3 (locked: have it reset at your municipal office)" in (
        result.stdout.splitlines()
    )


def test_pin_change_on_a_terminal_asks_the_new_pin_twice(daemon, card, terminals):
    address = daemon.bus.address
    wait_state(address, "card-present")
    card.commands(clear=True)
    term = terminals(address, "pin", "change", "auth", XDG_STATE_HOME=str(daemon.bus.dir))
    term.wait(CURRENT_PROMPT)
    term.type("1234", "Enter")
    shown(term, NEW_PROMPT, 1)
    term.type("8642", "Enter")
    shown(term, AGAIN_PROMPT, 1)
    term.type("8643", "Enter")  # a typo: asked again, nothing sent
    screen = shown(term, NEW_PROMPT, 2)
    assert "The two entries differ" in screen
    assert verifies_with_pin(card.commands()) == 0
    term.type("86", "Enter")  # malformed: asked again, nothing sent
    screen = shown(term, NEW_PROMPT, 3)
    assert (
        "mncctl: The new user-authentication PIN: That is not a valid user-authentication PIN: "
        "4 digits. No try was used." in screen
    )
    term.type("8642", "Enter")
    shown(term, AGAIN_PROMPT, 2)
    term.type("8642", "Enter")
    screen = term.wait("[exit ")
    assert "[exit 0]" in screen and "The user-authentication PIN was changed." in screen, screen
    assert "8642" not in screen and "1234" not in screen
    assert verifies_with_pin(card.commands()) == 1
    ok = mncctl(address, "auth", "--pin-stdin", stdin="8642\n")
    assert ok.returncode == 0, ok.stderr
    old = mncctl(address, "auth", "--pin-stdin", stdin="1234\n")
    assert old.returncode == 4 and "2 tries left" in old.stderr


def test_pin_change_with_a_wrong_current_pin_changes_nothing(daemon, card):
    address = daemon.bus.address
    wait_state(address, "card-present")
    result = mncctl(address, "pin", "change", "sign", "--pin-stdin", stdin="WRONG9\nNEWPASS77\n")
    assert result.returncode == 4
    assert result.stderr.splitlines() == [
        UNCONFIRMED,
        "mncctl: Wrong signing password: 4 tries left. The signing password was not changed; "
        "the current one still applies.",
    ]
    assert "WRONG9" not in result.stderr and "NEWPASS77" not in result.stderr
    assert card.tries()["sign"] == 4
    document = Path(daemon.bus.dir / "doc.txt")
    document.write_text("document\n")
    signed = mncctl(address, "sign", str(document), "--pin-stdin", stdin="ABC123\n")
    assert signed.returncode == 0, signed.stderr


def test_pin_change_at_the_last_card_info_try_needs_allow_last_try(daemon, insert_card):
    """The card-info counter is not in GetStatus: mncctl reads it live before asking."""
    card = insert_card(card_info_tries_left=1)
    address = daemon.bus.address
    wait_state(address, "card-present")
    card.commands(clear=True)
    refused = mncctl(address, "pin", "change", "card-info", "--pin-stdin", stdin="1234\n9753\n")
    assert refused.returncode == 4
    assert refused.stderr.splitlines() == [
        UNCONFIRMED,
        "mncctl: Only one try is left for the card-info PIN; a wrong one locks it until it is "
        "reset at your municipal office. To use it anyway, add --allow-last-try.",
    ]
    assert verifies_with_pin(card.commands()) == 0
    allowed = mncctl(address, "pin", "change", "card-info", "--pin-stdin", "--allow-last-try",
                     stdin="1234\n9753\n")  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert card.tries()["card_info"] == 3


def test_a_blocked_pin_is_not_asked_for(daemon, insert_card, terminals):
    card = insert_card(auth_tries_left=0)
    wait_state(daemon.bus.address, "card-present")
    term = terminals(daemon.bus.address, "pin", "change", "auth")
    screen = term.wait("[exit ")
    assert "[exit 4]" in screen, screen
    assert (
        "mncctl: The user-authentication PIN is locked: it was entered wrongly too many times. "
        "Have it reset at your municipal office (bring your My Number Card)."
        in screen.replace("\n", "")
    )
    assert CURRENT_PROMPT not in screen
    assert verifies_with_pin(card.commands()) == 0


def test_pin_change_in_a_desktop_session_leaves_the_pins_to_the_daemon(tmp_path, sandbox, card):
    entry = ScriptedPinentry(tmp_path / "pinentry", ["ABC123", "NEWPASS77"])
    env = {**sandbox.env, **config_with(tmp_path, entry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = mncctl(daemon.bus.address, "pin", "change", "sign", DISPLAY=":0")
    assert result.returncode == 0, result.stderr
    assert "Waiting for you to change the signing password in the PIN dialog" in result.stderr
    assert "The signing password was changed." in result.stdout
    assert [str(e["text"]) for e in entry.commands("SETPROMPT")] == [
        "Current signing password",
        "New signing password",
    ]
    assert card.tries()["sign"] == 5


def test_each_entry_is_checked_as_it_is_typed_in_japanese(daemon, card, terminals):
    """The current password in small letters, then the new one in full-width characters: each
    told at once, naming the entry, and asked again; Ctrl-C then cancels in Japanese."""
    address = daemon.bus.address
    wait_state(address, "card-present")
    card.commands(clear=True)
    term = terminals(address, "pin", "change", "sign", lang="ja_JP.UTF-8",
                     XDG_STATE_HOME=str(daemon.bus.dir))  # fmt: skip
    screen = term.wait("現在の署名用電子証明書のパスワード（")
    assert "注意: mncctl は他の実装と同じ形式のコマンドで暗証番号を変更します。" in screen
    term.type("abc123", "Enter")
    screen = shown(term, "現在の署名用電子証明書のパスワード（", 2)
    assert "mncctl: 現在の署名用電子証明書のパスワード: " in screen
    assert "小文字" in screen.replace("\n", "")
    term.type(card.profile.sign_password, "Enter")
    term.wait("新しい署名用電子証明書のパスワード（")
    term.type("-l", "ＮＥＷＰＡＳＳ７７")
    term.type("Enter")
    screen = shown(term, "新しい署名用電子証明書のパスワード（", 2)
    flat = screen.replace("\n", "")
    assert "mncctl: 新しい署名用電子証明書のパスワード: 全角で入力されています。" in flat
    term.type("NEWPASS77", "Enter")
    term.wait("もう一度入力してください:")
    term.type("C-c")
    screen = term.wait("[exit ")
    assert "[exit 5]" in screen and "キャンセルしました。" in screen, screen
    assert "cancelled" not in screen
    assert verifies_with_pin(card.commands()) == 0
    assert card.tries()["sign"] == card.profile.sign_tries_left


def test_pin_stdin_entries_are_checked_before_anything_is_sent(daemon, card):
    address = daemon.bus.address
    wait_state(address, "card-present")
    card.commands(clear=True)
    lower = mncctl(address, "pin", "change", "sign", "--pin-stdin", stdin="abc123\nNEWPASS77\n")
    assert lower.returncode == 4
    assert lower.stderr.splitlines()[1].startswith(
        "mncctl: --pin-stdin: The current signing password (first line): The signing password "
        "uses capital letters"
    )
    wide = mncctl(address, "pin", "change", "auth", "--pin-stdin", stdin="1234\n９８７６\n")
    assert wide.returncode == 4
    assert wide.stderr.splitlines()[1] == (
        "mncctl: --pin-stdin: The new user-authentication PIN (second line): It was typed in "
        "full-width characters: type it in half-width characters. Nothing was sent to the card."
    )
    assert verifies_with_pin(card.commands()) == 0


def test_the_unconfirmed_note_comes_before_the_first_change_on_a_card_only(daemon, card):
    address = daemon.bus.address
    wait_state(address, "card-present")
    first = mncctl(address, "pin", "change", "auth", "--pin-stdin", stdin="1234\n8642\n")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [UNCONFIRMED]
    back = mncctl(address, "pin", "change", "auth", "--pin-stdin", stdin="8642\n1234\n")
    assert back.returncode == 0, back.stderr
    assert back.stderr == ""
    japanese = mncctl(address, "pin", "change", "auth", "--pin-stdin", stdin="1234\n8642\n",
                      LANG="ja_JP.UTF-8")  # fmt: skip
    assert japanese.returncode == 0, japanese.stderr
    assert "利用者証明用電子証明書の暗証番号を変更しました" in japanese.stdout
    assert card.tries()["auth"] == 3
