"""The daemon asks for the PIN itself through a real pinentry (Debian's pinentry-tty in tmux)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from busstack import Daemon, PrivateBus, gdbus, gvariant_bytes, wait_for
from test_daemon_dbus import ERR, parse_gvariant_arrays, wait_state

from mncd.desktop.pinentry import escape, unescape


class Terminal:
    """A tmux pane whose tty the pinentry draws on (or that runs ``command``); keys are typed
    with send-keys."""

    def __init__(self, command: str = "sleep 3600") -> None:
        self.session = f"mncd-{uuid.uuid4().hex[:8]}"
        # Its own tmux server (socket named after the session): no test run shares one.
        self.tmux = ["tmux", "-L", self.session]
        subprocess.run(
            [*self.tmux, "-u", "new-session", "-d", "-s", self.session, "-x", "160", "-y", "40",
             command],
            check=True,
        )  # fmt: skip
        self.tty = subprocess.run(
            [*self.tmux, "display", "-p", "-t", self.session, "#{pane_tty}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def screen(self) -> str:
        return subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.session],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def wait(self, text: str) -> str:
        def seen() -> str | None:
            screen = self.screen()
            return screen if text in screen else None

        try:
            return wait_for(seen, repr(text))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the terminal shows:\n{self.screen()}") from None

    def type(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.session, *keys], check=True)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], check=False)


@pytest.fixture
def terminal():
    term = Terminal()
    yield term
    term.close()


def start_daemon(tmp_path, sandbox, terminal, program: str = "pinentry-tty") -> Daemon:
    config = tmp_path / "config" / "mncd"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(f'[pinentry]\nprogram = "{program}"\n')
    bus = PrivateBus(tmp_path)
    env = {**sandbox.env, "GPG_TTY": terminal.tty, "TERM": "xterm", "LANG": "C.UTF-8",
           "LANGUAGE": "", "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    try:
        return Daemon(bus, env, tmp_path / "state").start()
    except BaseException:
        bus.stop()
        raise


@pytest.fixture
def daemon(tmp_path, sandbox, terminal):
    process = start_daemon(tmp_path, sandbox, terminal)
    yield process
    process.stop()
    process.bus.stop()
    assert "Traceback" not in process.log


def authenticate_in_background(daemon, options: str = "{}") -> subprocess.Popen:
    """gdbus calling Authenticate with no PIN, as a desktop app would."""
    return subprocess.Popen(
        ["gdbus", "call", "--address", daemon.bus.address, "--dest",
         "io.github.mncd.MyNumberCard1", "--object-path", "/io/github/mncd/MyNumberCard1",
         "--timeout", "60", "--method", "io.github.mncd.MyNumberCard1.Authenticate",
         gvariant_bytes(b"challenge"), options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(call: subprocess.Popen) -> tuple[int, str, str]:
    out, err = call.communicate(timeout=60)
    return call.returncode, out, err


def verifies_with_data(card) -> int:
    return sum(1 for c in card.commands() if c.startswith("0020008004"))


def test_correct_pin_and_the_dialog_names_the_caller(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    call = authenticate_in_background(daemon)
    screen = terminal.wait("user-authentication PIN")
    gdbus_path = os.path.realpath(shutil.which("gdbus") or "gdbus")
    assert f"The program {gdbus_path} (process {call.pid}) wants to prove who you are" in screen
    assert "4 digits" in screen and "3 tries left" in screen
    terminal.type(card.profile.auth_pin, "Enter")
    code, out, err = finish(call)
    assert code == 0, err
    signature, cert = parse_gvariant_arrays(out)
    assert cert == card.certificates()["auth"] and len(signature) == 256
    assert card.profile.auth_pin not in daemon.log


def test_wrong_pin_then_right(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    call = authenticate_in_background(daemon)
    terminal.wait("3 tries left")
    terminal.type("9999", "Enter")
    terminal.wait("Wrong user-authentication PIN. 2 tries left.")
    terminal.type(card.profile.auth_pin, "Enter")
    code, _out, err = finish(call)
    assert code == 0, err
    assert card.tries()["auth"] == 3
    assert verifies_with_data(card) == 2


def test_cancel(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    call = authenticate_in_background(daemon)
    terminal.wait("3 tries left")
    terminal.type("C-d")
    code, _out, err = finish(call)
    assert code != 0 and ERR + "Cancelled" in err
    assert verifies_with_data(card) == 0


def test_malformed_entry_is_refused_in_the_dialog(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    call = authenticate_in_background(daemon)
    terminal.wait("3 tries left")
    terminal.type("12a", "Enter")
    terminal.wait("That is not a valid user-authentication PIN")
    assert verifies_with_data(card) == 0  # nothing reached the card, no try spent
    terminal.type(card.profile.auth_pin, "Enter")
    code, _out, err = finish(call)
    assert code == 0, err
    assert verifies_with_data(card) == 1 and card.tries()["auth"] == 3


@pytest.mark.parametrize(("answer", "succeeds"), [("y", True), ("n", False)])
def test_last_try_needs_confirmation(daemon, insert_card, terminal, answer, succeeds):
    card = insert_card(auth_tries_left=1)
    wait_state(daemon.bus.address, "card-present")
    call = authenticate_in_background(daemon)
    terminal.wait("Only one try is left")
    unwrapped = terminal.screen().replace("\n", "")
    gdbus_path = os.path.realpath(shutil.which("gdbus") or "gdbus")
    assert f"The program {gdbus_path} (process {call.pid}) is asking" in unwrapped
    terminal.type(answer)
    if succeeds:
        terminal.wait("1 try left")
        terminal.type(card.profile.auth_pin, "Enter")
    code, _out, err = finish(call)
    if succeeds:
        assert code == 0, err
        assert card.tries()["auth"] == 3
    else:
        assert ERR + "Cancelled" in err
        assert verifies_with_data(card) == 0 and card.tries()["auth"] == 1


def test_interactive_false_gives_pin_required_without_a_dialog(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    result = gdbus(daemon.bus.address, "Authenticate", gvariant_bytes(b"x"),
                   "{'interactive': <false>}")  # fmt: skip
    assert result.returncode != 0 and ERR + "PinRequired" in result.stderr
    assert "PIN" not in terminal.screen()
    assert verifies_with_data(card) == 0


def test_missing_pinentry_gives_pin_required(tmp_path, sandbox, terminal, card):
    daemon = start_daemon(tmp_path, sandbox, terminal, program="no-such-pinentry")
    try:
        wait_state(daemon.bus.address, "card-present")
        result = gdbus(daemon.bus.address, "Authenticate", gvariant_bytes(b"x"), "{}")
        assert result.returncode != 0 and ERR + "PinRequired" in result.stderr
        assert "pinentry" in result.stderr
    finally:
        daemon.stop()
        daemon.bus.stop()


def test_assuan_percent_escaping_round_trip():
    text = "100% sure\nline two\r"
    assert escape(text) == "100%25 sure%0Aline two%0D"
    assert bytes(unescape(escape(text).encode())) == text.encode()


def test_pin_entered_in_pinentry_is_not_in_any_output(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    call = authenticate_in_background(daemon)
    terminal.wait("3 tries left")
    terminal.type(card.profile.auth_pin, "Enter")
    code, out, err = finish(call)
    assert code == 0
    assert card.profile.auth_pin not in out + err


def test_dialog_in_japanese(tmp_path, sandbox, terminal, card):
    daemon = start_daemon(tmp_path, sandbox, terminal)
    daemon.stop()
    daemon.env["LANG"] = "ja_JP.UTF-8"
    daemon.start()
    try:
        wait_state(daemon.bus.address, "card-present")
        call = authenticate_in_background(daemon)
        screen = terminal.wait("残り3回です")
        gdbus_path = os.path.realpath(shutil.which("gdbus") or "gdbus")
        assert f"プログラム「{gdbus_path}」（プロセス{call.pid}）が" in screen
        assert "利用者証明用電子証明書の暗証番号を入力してください" in screen
        terminal.type(card.profile.auth_pin, "Enter")
        code, _out, err = finish(call)
        assert code == 0, err
    finally:
        daemon.stop()
        daemon.bus.stop()


def test_mncctl_in_a_desktop_session_lets_the_daemon_ask(daemon, card, terminal):
    wait_state(daemon.bus.address, "card-present")
    mncctl = str(Path(sys.executable).with_name("mncctl"))
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address, "DISPLAY": ":99",
           "LANG": "C.UTF-8", "LANGUAGE": ""}  # fmt: skip
    call = subprocess.Popen(
        [mncctl, "auth"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    screen = terminal.wait("3 tries left")
    assert "mncctl" in screen or "python" in screen  # the caller, as the kernel names it
    terminal.type(card.profile.auth_pin, "Enter")
    code, out, err = finish(call)
    assert code == 0, err
    assert "verified" in out
    assert err.splitlines() == [
        "Waiting for you to enter the user-authentication PIN in the PIN dialog…"
    ]
