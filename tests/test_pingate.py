"""The PIN gate on the real stack: no try spent that the user did not mean, nothing done after
they left (one test per path that used to break that promise).

The daemon asks for PINs through a scripted pinentry (a real Assuan peer); other programs reach
the card through pcscd as a browser's PKCS#11 module would.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import faultstats
import pytest
from busstack import CallError, daemon_on_private_bus, gdbus, gdbus_call, gvariant_bytes, wait_for
from conftest import READERS, wait_for_card
from faultkit import verifies_with_pin
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import status, wait_state

from mncd.card.errors import PinIncorrectError
from mncd.card.jpki import AUTH_KEY, JpkiSession
from mncd.card.pcsc import PcscContext

ERR = "io.github.mncd.MyNumberCard1.Error."


def unmeant(card, expected: dict[str, int]) -> None:
    """Count the tries the card lost beyond what the test's user meant to spend."""
    tries = card.tries()
    lost = sum(max(0, left - tries[name]) for name, left in expected.items())
    faultstats.add("pin_paths")
    faultstats.add("unmeant_tries", lost)
    assert lost == 0, f"tries spent that the user did not mean: {tries} vs {expected}"


@pytest.fixture
def pinentry(tmp_path):
    """A factory: ``pinentry(answers)`` gives the scripted pinentry the daemon will use."""
    made: list[ScriptedPinentry] = []

    def make(answers: list[object]) -> ScriptedPinentry:
        made.append(ScriptedPinentry(tmp_path / "pinentry", answers))
        return made[-1]

    yield make
    for entry in made:
        assert entry.overlaps() == 0, "two PIN dialogs were open at the same time"


def start(tmp_path: Path, sandbox, entry: ScriptedPinentry):
    env = {**sandbox.env, **config_with(tmp_path, entry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    return daemon_on_private_bus(tmp_path, env)


def authenticate_in_background(address: str, options: str = "{}") -> subprocess.Popen:
    """gdbus calling Authenticate without a PIN, as a desktop application would."""
    return subprocess.Popen(
        ["gdbus", "call", "--address", address, "--dest", "io.github.mncd.MyNumberCard1",
         "--object-path", "/io/github/mncd/MyNumberCard1", "--timeout", "120", "--method",
         "io.github.mncd.MyNumberCard1.Authenticate", gvariant_bytes(b"challenge"), options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(call: subprocess.Popen) -> tuple[int, str]:
    out, err = call.communicate(timeout=60)
    return call.returncode, out + err


def spend_tries(card, count: int) -> None:
    """Another PC/SC program (a browser's PKCS#11 module) types a wrong PIN ``count`` times."""
    with PcscContext() as context, context.connect(card.reader) as conn:
        for _ in range(count):
            with pytest.raises(PinIncorrectError):
                JpkiSession(conn).verify_pin(AUTH_KEY, "0000")


def waiting_for_pin(entry: ScriptedPinentry, count: int = 1) -> None:
    wait_for(lambda: len(entry.commands("GETPIN")) >= count, "the PIN dialog to ask")


def test_tries_spent_by_another_program_are_read_live(tmp_path, sandbox, card, pinentry):
    entry = pinentry([])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        assert status(daemon.bus.address)["auth"]["pin_tries_left"] == 3
        # A browser's PKCS#11 module spends two tries through pcscd, behind mncd's back.
        spend_tries(card, 2)
        assert status(daemon.bus.address)["auth"]["pin_tries_left"] == 3  # not seen yet
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            gdbus_call(daemon.bus.address, "Authenticate", gvariant_bytes(b"x"),
                       "{'pin': <'0000'>}")  # fmt: skip
        assert ERR + "PinRequired" in err.value.message and "allow-last-try" in err.value.message
        assert verifies_with_pin(card.commands()) == 0
        assert status(daemon.bus.address)["auth"]["pin_tries_left"] == 1  # now it is
    unmeant(card, {"auth": 1})


def test_a_card_swapped_while_the_dialog_is_open_gets_nothing(
    tmp_path, sandbox, insert_card, pinentry
):
    card_a = insert_card()
    go = tmp_path / "typed"
    entry = pinentry([{"wait": str(go), "then": card_a.profile.auth_pin}])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        call = authenticate_in_background(daemon.bus.address)
        waiting_for_pin(entry)
        card_a.control.remove(card_a.slot)
        wait_for_card(card_a.reader, present=False)  # a hand takes the card out...
        card_b = insert_card(slot=0, auth_pin="8642", auth_tries_left=1)  # ...and puts another in
        go.touch()  # the user types card A's PIN into the dialog
        code, output = finish(call)
        assert code != 0 and ERR + "CardRemoved" in output, output
        wait_state(daemon.bus.address, "card-present")
    assert verifies_with_pin(card_b.commands()) == 0
    unmeant(card_b, {"auth": 1})
    assert entry.commands("END") == []  # the dialog was closed by the daemon, not answered


def test_a_caller_that_leaves_takes_its_dialog_with_it(tmp_path, sandbox, card, pinentry):
    entry = pinentry(["hold"])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        caller = authenticate_in_background(daemon.bus.address)
        waiting_for_pin(entry)
        (dialog,) = entry.commands("START")
        caller.send_signal(signal.SIGKILL)  # Ctrl-C, a crash: the caller leaves the bus
        caller.wait()
        wait_for(lambda: not _alive(int(dialog["pid"])), "the dialog to be closed")
        assert verifies_with_pin(card.commands()) == 0
        assert status(daemon.bus.address)["state"] == "card-present"  # the daemon goes on
    unmeant(card, {"auth": 3})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has left; only its parent's wait is missing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_many_callers_get_one_dialog_at_a_time_and_the_rest_are_told_busy(
    tmp_path, sandbox, card, pinentry
):
    entry = pinentry([{"delay": 0.3, "then": "cancel"}] * 25)
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        calls = [authenticate_in_background(daemon.bus.address) for _ in range(25)]
        outcomes = [finish(call)[1] for call in calls]
    cancelled = sum(ERR + "Cancelled" in text for text in outcomes)
    busy = sum(ERR + "Busy" in text for text in outcomes)
    assert cancelled + busy == 25, outcomes
    assert busy > 0 and cancelled >= 1
    assert entry.started() == cancelled
    assert entry.overlaps() == 0
    assert verifies_with_pin(card.commands()) == 0
    unmeant(card, {"auth": 3})


def test_a_mistyped_signing_password_is_asked_again_alone(tmp_path, sandbox, card, pinentry):
    p = card.profile
    entry = pinentry(["WRONG1", p.sign_password, p.card_info_pin])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        output = gdbus_call(daemon.bus.address, "CheckPersonalData", "{}", timeout=60)
    assert "'matches': <true>" in output
    errors = [str(e["text"]) for e in entry.commands("SETERROR")]
    prompts = [str(e["text"]) for e in entry.commands("SETPROMPT")]
    # Three dialogs: the password, the password again with its own count, then the card-info PIN.
    assert prompts == ["signing password", "signing password", "card-info PIN"]
    assert errors == ["", "Wrong signing password. 4 tries left.", ""]
    unmeant(card, {"sign": 4, "card_info": 3})


def test_check_personal_data_keeps_the_last_signing_try(tmp_path, sandbox, insert_card, pinentry):
    card = insert_card(sign_tries_left=1)
    entry = pinentry([False])  # the user declines to use the last try
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        with pytest.raises(CallError) as err:
            gdbus_call(daemon.bus.address, "CheckPersonalData",
                       "{'pin': <'1234'>, 'sign-pin': <'WRONG1'>}")  # fmt: skip
        assert ERR + "PinRequired" in err.value.message and "allow-last-try" in err.value.message
        with pytest.raises(CallError) as err:
            gdbus_call(daemon.bus.address, "CheckPersonalData", "{}")
        assert ERR + "Cancelled" in err.value.message
        assert [e["command"] for e in entry.log() if e["command"] in ("CONFIRM", "GETPIN")] == [
            "CONFIRM"
        ]
    assert verifies_with_pin(card.commands()) == 0
    unmeant(card, {"sign": 1, "card_info": 3})


@pytest.mark.parametrize(
    ("settings", "method", "error"),
    [
        ({"auth_tries_left": 0}, "Authenticate", "PinBlocked"),
        ({"sign_certificate": False}, "Sign", "CertificateMissing"),
        (None, "Authenticate", "NoCard"),
    ],
    ids=["blocked", "under-15", "no-card"],
)
def test_nothing_is_asked_in_vain(tmp_path, sandbox, insert_card, pinentry, settings, method,
                                  error):  # fmt: skip
    entry = pinentry(["1234"])
    card = insert_card(**settings) if settings is not None else None
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present" if card else "no-card")
        args = (
            [gvariant_bytes(b"x"), "sha256", "{}"]
            if method == "Sign"
            else [gvariant_bytes(b"x"), "{}"]
        )
        result = gdbus(daemon.bus.address, method, *args)
        assert result.returncode != 0 and ERR + error in result.stderr, result.stderr
    assert entry.started() == 0
    if card is not None:
        assert verifies_with_pin(card.commands()) == 0


def test_interactive_false_never_opens_a_dialog(tmp_path, sandbox, card, pinentry):
    entry = pinentry(["1234"])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        with pytest.raises(CallError) as err:
            gdbus_call(daemon.bus.address, "Authenticate", gvariant_bytes(b"x"),
                       "{'interactive': <false>}")  # fmt: skip
        assert ERR + "PinRequired" in err.value.message
    assert entry.started() == 0
    unmeant(card, {"auth": 3})


def test_the_last_try_through_the_dialog_needs_a_confirmation(
    tmp_path, sandbox, insert_card, pinentry
):
    card = insert_card(auth_tries_left=1)
    entry = pinentry([True, card.profile.auth_pin])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        code, output = finish(authenticate_in_background(daemon.bus.address))
    assert code == 0, output
    assert [e["command"] for e in entry.log() if e["command"] in ("CONFIRM", "GETPIN")] == [
        "CONFIRM", "GETPIN",
    ]  # fmt: skip
    assert card.tries()["auth"] == 3


def test_a_dialog_shows_the_live_count(tmp_path, sandbox, card, pinentry):
    """The dialog opened after another program spent a try says 2, not the 3 read at insertion."""
    entry = pinentry(["cancel"])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        spend_tries(card, 1)
        finish(authenticate_in_background(daemon.bus.address))
    assert any("2 tries left" in text for text in entry.descriptions())
    unmeant(card, {"auth": 2})


def test_the_pin_given_for_one_reader_never_reaches_another(
    tmp_path, sandbox, insert_card, pinentry
):
    """Card A leaves while B sits in the second reader: B is not "the card" the user meant."""
    card_a = insert_card()
    card_b = insert_card(slot=1, auth_pin="8642", auth_tries_left=1)
    go = tmp_path / "typed"
    entry = pinentry([{"wait": str(go), "then": card_a.profile.auth_pin}])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        assert status(daemon.bus.address)["reader"] == READERS[0]
        call = authenticate_in_background(daemon.bus.address)
        waiting_for_pin(entry)
        card_a.control.remove(card_a.slot)
        go.touch()
        code, output = finish(call)
        assert code != 0 and ERR + "CardRemoved" in output, output
    assert verifies_with_pin(card_b.commands()) == 0
    unmeant(card_b, {"auth": 1})
