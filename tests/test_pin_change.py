"""ChangePin and GetPinStatus on the real stack: pcscd + vpcd + the virtual card, the daemon on a
private bus, gdbus as the caller, a scripted pinentry as the dialog, OpenSC afterwards.

Every test checks what the user meets afterwards: which PIN the card takes, the tries left, and
the card's APDU log (no VERIFY or CHANGE that the user did not mean).
"""

from __future__ import annotations

import pytest
from busstack import (
    CallError,
    daemon_on_private_bus,
    gdbus_call,
    gvariant_bytes,
    parse_gvariant_arrays,
    wait_for,
)
from faultkit import verifies_with_pin
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import ERR, status, wait_state
from test_opensc import opensc_module, run
from test_pingate import spend_tries, start, unmeant

from mncd.card.cardinfo import CardInfoSession
from mncd.card.errors import PinIncorrectError, SecurityStatusError
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, JpkiSession
from mncd.card.pcsc import PcscContext

CHANGE = "00240180"
CURRENT = {"auth": "auth_pin", "sign": "sign_password", "card-info": "card_info_pin"}
NEW = {"auth": "8642", "sign": "NEWPASS77", "card-info": "9753"}
TRIES = {"auth": "auth", "sign": "sign", "card-info": "card_info"}


@pytest.fixture
def pinentry(tmp_path):
    made: list[ScriptedPinentry] = []

    def make(answers: list[object]) -> ScriptedPinentry:
        made.append(ScriptedPinentry(tmp_path / "pinentry", answers))
        return made[-1]

    yield make
    for entry in made:
        assert entry.overlaps() == 0, "two PIN dialogs were open at the same time"


def options(**values: str | bool) -> str:
    """An a{sv} of strings and booleans in GVariant text form (new_pin → new-pin)."""
    parts = []
    for name, value in values.items():
        text = ("true" if value else "false") if isinstance(value, bool) else f"'{value}'"
        parts.append(f"'{name.replace('_', '-')}': <{text}>")
    return "{" + ", ".join(parts) + "}"


def change_pin(address: str, which: str, **values: str | bool) -> str:
    return gdbus_call(address, "ChangePin", f"'{which}'", options(**values), timeout=120)


def pin_works(address: str, which: str, pin: str, sign_password: str = "ABC123") -> bool:
    """Whether the card takes ``pin`` as ``which`` in the call a user would make with it
    (a wrong one spends a try, as it would for the user)."""
    try:
        if which == "auth":
            out = gdbus_call(address, "Authenticate", gvariant_bytes(b"x"), options(pin=pin))
            assert len(parse_gvariant_arrays(out)[0]) == 256
        elif which == "sign":
            out = gdbus_call(address, "Sign", gvariant_bytes(b"x"), "sha256", options(pin=pin))
            assert len(parse_gvariant_arrays(out)[0]) == 256
        else:
            out = gdbus_call(address, "CheckPersonalData", options(pin=pin, sign_pin=sign_password))
            assert "'matches': <true>" in out
    except CallError as exc:
        if ERR + "PinIncorrect" in exc.message:
            return False
        raise
    return True


def changes(card_or_log) -> list[str]:
    """The CHANGE REFERENCE DATA commands in an APDU log (or in a card's log)."""
    log = card_or_log if isinstance(card_or_log, list) else card_or_log.commands()
    return [c for c in log if c.startswith(CHANGE)]


@pytest.mark.parametrize("which", ["auth", "sign", "card-info"])
def test_change_then_the_new_pin_works_and_the_old_does_not(tmp_path, sandbox, card, pinentry,
                                                            which):  # fmt: skip
    old = getattr(card.profile, CURRENT[which])
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        card.commands(clear=True)
        change_pin(address, which, pin=old, new_pin=NEW[which])
        log = card.commands(clear=True)
        # One card session: SELECT AP, SELECT PIN EF, the live counter, VERIFY, CHANGE.
        assert [c[:8] for c in log][-2:] == ["00200080", CHANGE]
        assert verifies_with_pin(log) == 1 and len(changes(log)) == 1
        assert NEW[which].encode().hex().upper() not in "".join(log)  # masked in the log
        assert pin_works(address, which, NEW[which])
        assert not pin_works(address, which, old)
        assert pin_works(address, which, NEW[which])  # and the counter is full again
        if which == "sign":  # distinctive enough to grep for (digits may be in a pid)
            assert NEW[which] not in daemon.log and old not in daemon.log
    assert card.tries()[TRIES[which]] == {"auth": 3, "sign": 5, "card-info": 3}[which]


def test_a_verified_pin_does_not_outlive_the_change(tmp_path, sandbox, insert_card, pinentry):
    """With a card that keeps verification across SELECTs, only the reset ends it."""
    card = insert_card(reselect_logout=False)
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        wait_state(daemon.bus.address, "card-present")
        change_pin(daemon.bus.address, "auth", pin="1234", new_pin=NEW["auth"])
        with (
            PcscContext() as context,
            context.connect(card.reader) as conn,
            pytest.raises(SecurityStatusError),
        ):
            JpkiSession(conn).sign(AUTH_KEY, b"\x30" * 51)  # no VERIFY first


def test_a_wrong_current_pin_spends_one_try_and_changes_nothing(tmp_path, sandbox, card,
                                                                pinentry):  # fmt: skip
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            change_pin(address, "sign", pin="WRONG9", new_pin=NEW["sign"])
        text = err.value.message
        assert ERR + "PinIncorrect" in text and "4 tries left" in text
        assert "your signing password was not changed: the current one is still valid" in text
        assert card.tries()["sign"] == 4 and changes(card) == []
        assert pin_works(address, "sign", "ABC123")


def test_a_wrong_current_pin_in_the_dialog_is_asked_again_alone(tmp_path, sandbox, card,
                                                                pinentry):  # fmt: skip
    entry = pinentry(["0000", NEW["auth"], "cancel"])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            change_pin(daemon.bus.address, "auth")
        assert ERR + "Cancelled" in err.value.message
        assert "was not changed" in err.value.message
    prompts = [str(e["text"]) for e in entry.commands("SETPROMPT")]
    assert prompts == [
        "Current user-authentication PIN",
        "New user-authentication PIN",
        "Current user-authentication PIN",
    ]
    assert [str(e["text"]) for e in entry.commands("SETERROR")][-1] == (
        "Wrong user-authentication PIN. 2 tries left."
    )
    assert verifies_with_pin(card.commands()) == 1 and changes(card) == []
    unmeant(card, {"auth": 2})  # the one wrong PIN the user typed, no more


def test_the_dialog_asks_the_current_pin_then_the_new_one_twice(tmp_path, sandbox, card,
                                                                pinentry):  # fmt: skip
    entry = pinentry([card.profile.card_info_pin, NEW["card-info"]])
    with start(tmp_path, sandbox, entry) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        change_pin(address, "card-info")
        assert pin_works(address, "card-info", NEW["card-info"])
    assert [str(e["text"]) for e in entry.commands("SETREPEAT")] == ["New card-info PIN again"]
    assert any(
        "wants to change your card-info PIN" in d and "Enter your current card-info PIN" in d
        for d in entry.descriptions()
    )
    assert entry.started() == 1  # one dialog conversation for all three entries


def test_a_malformed_or_mismatched_new_pin_is_asked_again_and_reaches_no_card(
    tmp_path, sandbox, card, pinentry
):
    # A pinentry without SETREPEAT: the daemon asks the second time and compares itself.
    entry = pinentry(["1234", "12a4", {"once": "5678"}, {"once": "5679"}, "cancel"])
    with start(tmp_path, sandbox, entry) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            change_pin(address, "auth")
        assert ERR + "Cancelled" in err.value.message
        log = card.commands()
        assert verifies_with_pin(log) == 0 and changes(log) == []
        # Only the live counter was read, before the dialog showed.
        assert all(c.startswith(("00A4", "00200080")) and len(c) <= 30 for c in log), log
        assert pin_works(address, "auth", "1234")
    unmeant(card, {"auth": 3})
    errors = [str(e["text"]) for e in entry.commands("SETERROR")]
    assert "That is not a valid user-authentication PIN: 4 digits." in errors
    assert errors[-1] == "The two entries of the new user-authentication PIN differ. Type it again."
    prompts = [str(e["text"]) for e in entry.commands("SETPROMPT")]
    assert "New user-authentication PIN again" in prompts


@pytest.mark.parametrize(
    ("which", "new", "error"),
    [
        ("auth", "12345", "PinFormat"),
        ("auth", "１２３４", "PinFormat"),
        ("sign", "abc123", "PinFormat"),
        ("sign", "ABCDEFG", "PinFormat"),
        ("card-info", "123", "PinFormat"),
        ("auth", "1234", "PinFormat"),  # the same as the current one
    ],
)
def test_a_malformed_new_pin_sends_no_apdu_at_all(tmp_path, sandbox, card, pinentry, which, new,
                                                 error):  # fmt: skip
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            change_pin(daemon.bus.address, which, pin=getattr(card.profile, CURRENT[which]),
                       new_pin=new)  # fmt: skip
        assert ERR + error in err.value.message
        assert "new" in err.value.message
        assert card.commands() == []


def test_both_pins_or_neither(tmp_path, sandbox, card, pinentry):
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        for given in ({"pin": "1234"}, {"new_pin": "5678"}):
            with pytest.raises(CallError) as err:
                change_pin(daemon.bus.address, "auth", **given)
            assert ERR + "InvalidArgument" in err.value.message
        with pytest.raises(CallError) as err:
            change_pin(daemon.bus.address, "pin", pin="1234", new_pin="5678")
        assert ERR + "InvalidArgument" in err.value.message
        assert card.commands() == []


def test_card_pulled_between_verify_and_change_keeps_the_old_pin(tmp_path, sandbox, card,
                                                                 pinentry):  # fmt: skip
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        card.control.pull_on(CHANGE, slot=card.slot)
        with pytest.raises(CallError) as err:
            change_pin(address, "auth", pin="1234", new_pin=NEW["auth"])
        text = err.value.message
        assert ERR + "CardRemoved" in text
        assert "the card did not confirm the change" in text
        assert "current user-authentication PIN should still be valid" in text
        wait_state(address, "no-card")
        card.reinsert()
        wait_state(address, "card-present")
        assert pin_works(address, "auth", "1234")
        assert not pin_works(address, "auth", NEW["auth"])


def test_at_one_try_left_the_change_needs_the_last_try_confirmation(
    tmp_path, sandbox, insert_card, pinentry
):
    card = insert_card(auth_tries_left=1)
    entry = pinentry([False, True, "1234", NEW["auth"]])
    with start(tmp_path, sandbox, entry) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:  # a script's PIN: only with allow-last-try
            change_pin(address, "auth", pin="1234", new_pin=NEW["auth"])
        assert ERR + "PinRequired" in err.value.message and "allow-last-try" in err.value.message
        with pytest.raises(CallError) as err:  # the dialog: the user declines
            change_pin(address, "auth")
        assert ERR + "Cancelled" in err.value.message
        assert verifies_with_pin(card.commands()) == 0 and card.tries()["auth"] == 1
        change_pin(address, "auth")  # the user confirms, then types both PINs
    asked = [e["command"] for e in entry.log() if e["command"] in ("CONFIRM", "GETPIN")]
    assert asked == ["CONFIRM", "CONFIRM", "GETPIN", "GETPIN"]
    assert len(changes(card)) == 1
    unmeant(card, {"auth": 3})


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"change_pin": False}, "NotSupported"),
        ({"change_pin_refuse": "6A86"}, "NotSupported"),
        ({"change_pin_refuse": "6A80"}, "Failed"),
    ],
    ids=["no-command", "other-form", "refused"],
)
def test_a_card_that_does_not_change_keeps_the_old_pin(tmp_path, sandbox, insert_card, pinentry,
                                                       settings, error):  # fmt: skip
    card = insert_card(**settings)
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        with pytest.raises(CallError) as err:
            change_pin(address, "auth", pin="1234", new_pin=NEW["auth"])
        assert ERR + error in err.value.message
        assert "was not changed: the current one is still valid" in err.value.message
        assert pin_works(address, "auth", "1234")
    assert card.tries()["auth"] == 3


def test_a_card_without_signing_certificate_has_no_password_to_change(
    tmp_path, sandbox, insert_card, pinentry
):
    card = insert_card(sign_certificate=False)
    entry = pinentry(["ABC123", "NEWPASS77"])
    with start(tmp_path, sandbox, entry) as daemon:
        wait_state(daemon.bus.address, "card-present")
        card.commands(clear=True)
        with pytest.raises(CallError) as err:
            change_pin(daemon.bus.address, "sign")
        assert ERR + "CertificateMissing" in err.value.message
    assert entry.started() == 0 and card.commands() == []


def test_opensc_still_reads_and_signs_after_a_change(tmp_path, sandbox, card, pinentry):
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        wait_state(daemon.bus.address, "card-present")
        change_pin(daemon.bus.address, "auth", pin="1234", new_pin=NEW["auth"])
        change_pin(daemon.bus.address, "sign", pin="ABC123", new_pin=NEW["sign"])
    pins = run("pkcs15-tool", "--list-pins")
    assert pins.returncode == 0, pins.stderr
    assert pins.stdout.count("Tries left     : 3") == 1
    assert "Tries left     : 5" in pins.stdout
    listing = run("pkcs15-tool", "--list-certificates", "--verify-pin", "--auth-id", "02",
                  "--pin", NEW["sign"])  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("Encoded serial") == 4
    data = tmp_path / "data"
    data.write_bytes(b"signed by OpenSC with the new PIN")
    signed = run(
        "pkcs11-tool", "--module", opensc_module(),
        "--token-label", "JPKI (User Authentication PIN)", "--login", "--pin", NEW["auth"],
        "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
        "-i", str(data), "-o", str(tmp_path / "sig"),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    old = run(
        "pkcs11-tool", "--module", opensc_module(),
        "--token-label", "JPKI (User Authentication PIN)", "--login", "--pin", "1234",
        "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", "01",
        "-i", str(data), "-o", str(tmp_path / "sig2"),
    )  # fmt: skip
    assert old.returncode != 0
    assert card.tries()["auth"] == 2


def spend_card_info_try(card) -> None:
    with (
        PcscContext() as context,
        context.connect(card.reader) as conn,
        pytest.raises(PinIncorrectError),
    ):
        CardInfoSession(conn).verify_pin("0000")


def spend_sign_tries(card, count: int) -> None:
    with PcscContext() as context, context.connect(card.reader) as conn:
        for _ in range(count):
            with pytest.raises(PinIncorrectError):
                JpkiSession(conn).verify_pin(SIGN_KEY, "WRONG9")


def test_pin_status_reads_what_another_program_spent(tmp_path, sandbox, card, pinentry):
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        address = daemon.bus.address
        wait_state(address, "card-present")
        spend_tries(card, 1)  # a browser's PKCS#11 module, behind mncd's back
        spend_sign_tries(card, 2)
        spend_card_info_try(card)
        card.commands(clear=True)
        out = gdbus_call(address, "GetPinStatus", "@a{sv} {}")
        for which, left in (("auth", 2), ("sign", 3), ("card-info", 2)):
            assert f"'{which}': <{{'present': <true>, 'tries_left': <{left}>" in out, out
        assert verifies_with_pin(card.commands()) == 0
        # GetStatus now shows the live counts too.
        wait_for(lambda: status(address)["sign"]["pin_tries_left"] == 3, "the sign count")
        assert status(address)["auth"]["pin_tries_left"] == 2
        with pytest.raises(CallError) as err:
            gdbus_call(address, "GetPinStatus", "{'pin': <'1234'>}")
        assert ERR + "InvalidArgument" in err.value.message
    assert card.tries() == {"auth": 2, "sign": 3, "card_info": 2}


def test_pin_status_without_a_card(tmp_path, sandbox, pinentry):
    with start(tmp_path, sandbox, pinentry([])) as daemon:
        wait_state(daemon.bus.address, "no-card")
        with pytest.raises(CallError) as err:
            gdbus_call(daemon.bus.address, "GetPinStatus", "@a{sv} {}")
        assert ERR + "NoCard" in err.value.message


def test_the_change_dialog_speaks_japanese(tmp_path, sandbox, card, pinentry):
    entry = pinentry([card.profile.auth_pin, NEW["auth"]])
    env = {**sandbox.env, **config_with(tmp_path, entry), "LANGUAGE": "ja", "LANG": "C.UTF-8",
           "DISPLAY": ":0"}  # fmt: skip
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        change_pin(daemon.bus.address, "auth")
    prompts = [str(e["text"]) for e in entry.commands("SETPROMPT")]
    assert prompts == [
        "現在の利用者証明用電子証明書の暗証番号",
        "新しい利用者証明用電子証明書の暗証番号",
    ]
    assert [str(e["text"]) for e in entry.commands("SETREPEAT")] == [
        "新しい利用者証明用電子証明書の暗証番号（確認）"
    ]
    assert any("暗証番号を変更する" in d for d in entry.descriptions())
    assert card.tries()["auth"] == 3 and len(changes(card)) == 1
