"""mncctl asking for a PIN on a real terminal (tmux): the last try, PINs that cannot be used, and
a desktop session whose PIN dialog cannot be shown. The real daemon, bus and virtual card."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import verifies_with_pin
from test_daemon_dbus import wait_state
from test_pinentry import Terminal, start_daemon

MNCCTL = str(Path(sys.executable).with_name("mncctl"))
AUTH_PROMPT = "User-authentication PIN (4 digits):"
SIGN_PROMPT = "Signing password (6 to 16 characters"
QUESTION = "Use the last try?"


def run_in_terminal(
    address: str, *args: str, desktop: bool = False, lang: str = "C.UTF-8", **extra: str
) -> Terminal:
    """mncctl on a tmux terminal (in the locale ``lang``, with ``extra`` in its environment);
    the pane ends with ``[exit N]`` and stays open."""
    env = ["env", "-u", "DISPLAY", "-u", "WAYLAND_DISPLAY", "-u", "LC_ALL", "-u", "LC_MESSAGES",
           f"DBUS_SESSION_BUS_ADDRESS={address}", f"LANG={lang}", "LANGUAGE="]  # fmt: skip
    env += [f"{key}={value}" for key, value in extra.items()]
    if desktop:
        env.append("DISPLAY=:99")
    command = shlex.join([*env, MNCCTL, *args])
    return Terminal(f'{command}; echo "[exit $?]"; sleep 3600')


def test_last_try_answered_no_sends_nothing(daemon, insert_card, terminals):
    card = insert_card(auth_tries_left=1)
    wait_state(daemon.bus.address, "card-present")
    term = terminals(daemon.bus.address, "auth")
    screen = term.wait(QUESTION)
    assert (
        "Only one try is left for the user-authentication PIN: a wrong one locks it until it is "
        "reset at your municipal office." in screen.replace("\n", "")
    )
    assert "[y/N]" in screen and AUTH_PROMPT not in screen
    term.type("n", "Enter")
    screen = term.wait("[exit ")
    assert "[exit 5]" in screen and "The last try was not used: cancelled." in screen
    assert AUTH_PROMPT not in screen
    assert verifies_with_pin(card.commands()) == 0
    assert card.tries()["auth"] == 1


def test_last_try_answered_yes_then_the_right_pin(daemon, insert_card, terminals):
    card = insert_card(auth_tries_left=1)
    wait_state(daemon.bus.address, "card-present")
    term = terminals(daemon.bus.address, "auth")
    term.wait(QUESTION)
    term.type("y", "Enter")
    term.wait(AUTH_PROMPT)
    term.type(card.profile.auth_pin, "Enter")
    screen = term.wait("[exit ")
    assert "[exit 0]" in screen and "verified" in screen, screen
    assert card.profile.auth_pin not in screen
    assert card.tries()["auth"] == 3


def test_pin_stdin_at_the_last_try_needs_allow_last_try(daemon, insert_card, tmp_path):
    card = insert_card(sign_tries_left=1)
    wait_state(daemon.bus.address, "card-present")
    document = tmp_path / "doc.txt"
    document.write_text("document\n")
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address, "LANG": "C.UTF-8",
           "LANGUAGE": ""}  # fmt: skip
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)

    def sign(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [MNCCTL, "sign", str(document), "--pin-stdin", *extra],
            input=card.profile.sign_password + "\n", capture_output=True, text=True,
            timeout=60, env=env,
        )  # fmt: skip

    refused = sign()
    assert refused.returncode == 4
    assert refused.stderr.splitlines() == [
        "mncctl: Only one try is left for the signing password; a wrong one locks it until it "
        "is reset at your municipal office. To use it anyway, add --allow-last-try."
    ]
    assert verifies_with_pin(card.commands()) == 0 and card.tries()["sign"] == 1
    allowed = sign("--allow-last-try")
    assert allowed.returncode == 0, allowed.stderr
    assert card.tries()["sign"] == 5


@pytest.mark.parametrize(
    ("settings", "command", "code", "line"),
    [
        ({"auth_tries_left": 0}, "auth", 4, "The user-authentication PIN is locked: it was "
         "entered wrongly too many times. Have it reset at your municipal office"),
        ({"sign_tries_left": 0}, "sign", 4, "The signing password is locked: it was entered "
         "wrongly too many times. Have it reset at your municipal office"),
        ({"sign_certificate": False}, "sign", 1, "The card has no signing certificate: cards of "
         "children under 15 carry none, and one can be issued at your municipal office."),
        (None, "auth", 1, "No My Number Card is in the reader: insert it and try again."),
    ],
    ids=["auth-blocked", "sign-blocked", "under-15", "no-card"],
)  # fmt: skip
def test_no_prompt_for_a_pin_that_cannot_be_used(
    daemon, insert_card, terminals, tmp_path, settings, command, code, line
):
    card = insert_card(**settings) if settings is not None else None
    wait_state(daemon.bus.address, "card-present" if card else "no-card")
    document = tmp_path / "doc.txt"
    document.write_text("document\n")
    args = ["sign", str(document)] if command == "sign" else ["auth"]
    term = terminals(daemon.bus.address, *args)
    screen = term.wait("[exit ")
    assert f"[exit {code}]" in screen, screen
    assert f"mncctl: {line}" in screen.replace("\n", ""), screen  # one line, wrapped at 80
    for prompt in (AUTH_PROMPT, SIGN_PROMPT, QUESTION, "Waiting for you"):
        assert prompt not in screen
    if card is not None:
        assert verifies_with_pin(card.commands()) == 0


@pytest.fixture
def gpg_terminal():
    term = Terminal()
    yield term
    term.close()


def test_missing_pinentry_falls_back_to_the_terminal(
    tmp_path, sandbox, gpg_terminal, card, terminals
):
    daemon = start_daemon(tmp_path, sandbox, gpg_terminal, program="pinentry-does-not-exist")
    try:
        wait_state(daemon.bus.address, "card-present")
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address, "DISPLAY": ":99",
               "LANG": "C.UTF-8", "LANGUAGE": ""}  # fmt: skip
        without_terminal = subprocess.run(
            [MNCCTL, "auth"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60, env=env,
        )  # fmt: skip
        assert without_terminal.returncode == 4
        assert without_terminal.stderr.splitlines()[-1] == (
            "mncctl: A PIN is needed and no PIN dialog could be shown: run mncctl in a terminal "
            "to be asked there, or pass it with --pin-stdin."
        )

        # mncctl reads the same settings as the daemon: it names the program that is missing
        term = terminals(daemon.bus.address, "auth", desktop=True,
                         XDG_CONFIG_HOME=str(tmp_path / "config"))  # fmt: skip
        screen = term.wait(AUTH_PROMPT)
        lines = screen.splitlines()
        waiting = next(i for i, text in enumerate(lines) if "Waiting for you" in text)
        assert lines[waiting].startswith(
            "Waiting for you to enter the user-authentication PIN in the PIN dialog…"
        )
        fallback = "\n".join(lines[waiting + 1 :])
        assert fallback.replace("\n", "").startswith(
            "mncctl: no PIN dialog could be shown because pinentry-does-not-exist is not "
            "installed; asking here instead."
        )
        term.type(card.profile.auth_pin, "Enter")
        screen = term.wait("[exit ")
        assert "[exit 0]" in screen and "verified" in screen, screen
        assert verifies_with_pin(card.commands()) >= 1
    finally:
        daemon.stop()
        daemon.bus.stop()
    assert "Traceback" not in daemon.log
