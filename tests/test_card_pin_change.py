"""CHANGE REFERENCE DATA in the card layer and the virtual card, in-process (no pcscd).

The real-stack tests in test_pin_change.py cover the same through pcscd, vpcd and the daemon.
"""

from __future__ import annotations

import pytest
from test_card_protocol import CardConnection, ScriptedConnection, virtual

from mncd.card.cardinfo import CardInfoSession
from mncd.card.errors import (
    PinChangeRefusedError,
    PinChangeUnsupportedError,
    PinFormatError,
    PinIncorrectError,
    SecurityStatusError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, JpkiSession
from mncd.vcard import pki
from mncd.vcard.profile import CardProfile


@pytest.fixture(scope="module")
def test_pki() -> pki.CardPki:
    return pki.generate(CardProfile())


def test_the_change_is_the_peers_case_3_apdu_after_verify():
    conn = ScriptedConnection("9000", "9000", "9000", "9000")
    session = JpkiSession(conn)
    session.verify_pin(AUTH_KEY, "1234")
    session.change_pin(AUTH_KEY, "5678")
    # SELECT AP, SELECT PIN EF, VERIFY, then CHANGE REFERENCE DATA P1 01 with no Le and no
    # second SELECT in between (that would end the verification on a real card).
    assert conn.sent[3] == "0024018004" + b"5678".hex().upper()
    assert len(conn.sent) == 4


@pytest.mark.parametrize(
    ("key", "pin"),
    [(AUTH_KEY, "12345"), (AUTH_KEY, "１２３４"), (SIGN_KEY, "abc123"), (SIGN_KEY, "ABCDEFG")],
)
def test_a_malformed_new_pin_is_never_sent(key, pin):
    conn = ScriptedConnection()
    with pytest.raises(PinFormatError):
        JpkiSession(conn).change_pin(key, pin)
    assert conn.sent == []


def test_the_virtual_card_changes_the_pin_and_resets_its_counter(test_pki):
    card = virtual(test_pki, auth_tries_left=2)
    session = JpkiSession(CardConnection(card))
    session.verify_pin(AUTH_KEY, "1234")
    session.change_pin(AUTH_KEY, "8642")
    assert card.tries_left()["auth"] == 3
    fresh = JpkiSession(CardConnection(card))
    with pytest.raises(PinIncorrectError):
        fresh.verify_pin(AUTH_KEY, "1234")
    fresh.verify_pin(AUTH_KEY, "8642")
    # The log never holds either PIN: VERIFY and CHANGE data are masked.
    commands = [entry.command for entry in card.log]
    assert not any(b"8642".hex().upper() in c or b"1234".hex().upper() in c for c in commands)
    assert any(c.startswith("0024018004") for c in commands)


def test_the_card_info_pin_changes_in_its_own_application(test_pki):
    card = virtual(test_pki)
    session = CardInfoSession(CardConnection(card))
    session.verify_pin("1234")
    session.change_pin("9753")
    assert card.tries_left()["card_info"] == 3
    again = CardInfoSession(CardConnection(card))
    again.verify_pin("9753")
    assert again.read_basic_info().name == card.profile.name
    # The user-authentication PIN of the JPKI AP is a different PIN: still the old one.
    JpkiSession(CardConnection(card)).verify_pin(AUTH_KEY, "1234")


def test_a_change_without_verify_is_refused_by_the_card(test_pki):
    card = virtual(test_pki)
    session = JpkiSession(CardConnection(card))
    session.pin_tries_left(AUTH_KEY)  # selects the PIN EF, verifies nothing
    with pytest.raises(SecurityStatusError):
        session.change_pin(AUTH_KEY, "8642")
    JpkiSession(CardConnection(card)).verify_pin(AUTH_KEY, "1234")


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"change_pin": False}, PinChangeUnsupportedError),
        ({"change_pin_refuse": "6A86"}, PinChangeUnsupportedError),
        ({"change_pin_refuse": "6A80"}, PinChangeRefusedError),
    ],
    ids=["no-command", "other-form", "refused"],
)
def test_a_card_that_will_not_change_keeps_its_pin(test_pki, settings, error):
    card = virtual(test_pki, **settings)
    session = JpkiSession(CardConnection(card))
    session.verify_pin(SIGN_KEY, "ABC123")
    with pytest.raises(error):
        session.change_pin(SIGN_KEY, "NEW2PASS")
    JpkiSession(CardConnection(card)).verify_pin(SIGN_KEY, "ABC123")
    assert card.tries_left()["sign"] == 5


@pytest.mark.parametrize("value", ["9000", "63", "XYZW", "6A8000"])
def test_the_refusal_setting_takes_a_status_word_only(value):
    with pytest.raises(ValueError):
        CardProfile().with_overrides([f"change_pin_refuse={value}"])
