"""Unit tests of the card protocol layer with in-process connections (no pcscd).

The real-stack tests in test_card_pcsc.py cover the same layer through pcscd + vpcd.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mncd.card.apdu import Apdu, CardProtocol
from mncd.card.cardinfo import parse_basic_info
from mncd.card.digestinfo import digest, digest_info
from mncd.card.errors import (
    ApduError,
    InvalidResponseError,
    PinBlockedError,
    PinFormatError,
    PinIncorrectError,
)
from mncd.card.jpki import AUTH_KEY, Certificate, JpkiSession, der_length
from mncd.card.pin import AUTH_PIN, SIGN_PASSWORD
from mncd.vcard import pki
from mncd.vcard.card import VirtualCard, basic_info_template
from mncd.vcard.profile import CardProfile


class ScriptedConnection:
    """Answers each APDU with the next scripted response and records what was sent."""

    def __init__(self, *responses: str) -> None:
        self.responses = [bytes.fromhex(r) for r in responses]
        self.sent: list[str] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu.hex().upper())
        return self.responses.pop(0)


class CardConnection:
    """Connects straight to a VirtualCard's APDU handler."""

    def __init__(self, card: VirtualCard) -> None:
        self.card = card

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.process(apdu)


@pytest.fixture(scope="module")
def test_pki() -> pki.CardPki:
    return pki.generate(CardProfile())


def virtual(test_pki: pki.CardPki, **settings: object) -> VirtualCard:
    profile = CardProfile.from_dict({**CardProfile().to_dict(), **settings})
    card = VirtualCard(profile, test_pki)
    card.insert()
    return card


def test_apdu_encoding_cases():
    assert Apdu(0, 0xA4, 4, 0x0C, b"\x01\x02").encode().hex() == "00a4040c020102"
    assert Apdu(0, 0xB0, 0, 0, le=256).encode().hex() == "00b0000000"
    assert Apdu(0x80, 0x2A, 0, 0x80, b"\xaa", le=256).encode().hex() == "802a008001aa00"
    with pytest.raises(ValueError):
        Apdu(0, 0, 0, 0, bytes(256))


def test_get_response_chaining():
    conn = ScriptedConnection("AABB6102", "CCDD9000")
    assert CardProtocol(conn).send(Apdu(0x80, 0x2A, 0, 0x80, b"x", le=256)) == bytes.fromhex(
        "AABBCCDD"
    )
    assert conn.sent[1] == "00C0000002"


def test_wrong_le_is_reissued():
    conn = ScriptedConnection("6C03", "0102039000")
    assert CardProtocol(conn).send(Apdu(0, 0xB0, 0, 0, le=200)) == b"\x01\x02\x03"
    assert conn.sent == ["00B00000C8", "00B0000003"]


def test_endless_get_response_is_refused():
    conn = ScriptedConnection(*(["006101"] * 70))
    with pytest.raises(InvalidResponseError):
        CardProtocol(conn).send(Apdu(0, 0xB0, 0, 0, le=1))


@pytest.mark.parametrize("sw", ["63C0", "6983", "6984"])
def test_every_blocked_status_word_is_blocked(sw):
    conn = ScriptedConnection("9000", "9000", sw)
    with pytest.raises(PinBlockedError) as err:
        JpkiSession(conn).verify_pin(AUTH_KEY, "1234")
    assert err.value.tries_left == 0


def test_verify_has_no_le_and_incorrect_reports_tries():
    conn = ScriptedConnection("9000", "9000", "63C1")
    with pytest.raises(PinIncorrectError) as err:
        JpkiSession(conn).verify_pin(AUTH_KEY, "1111")
    assert err.value.tries_left == 1
    assert conn.sent[2] == "002000800431313131"  # case 3: no trailing Le


def test_der_length_forms():
    assert der_length(bytes.fromhex("30820384")) == 0x384 + 4
    assert der_length(bytes.fromhex("3081F0")) == 0xF0 + 3
    assert der_length(bytes.fromhex("3010")) == 0x12
    for bad in ("3180", "308000", "3085FFFFFFFFFF", ""):
        with pytest.raises(InvalidResponseError):
            der_length(bytes.fromhex(bad))


def test_truncated_certificate_is_an_error():
    # Header says 0x384 bytes; the card then returns nothing more.
    conn = ScriptedConnection("9000", "9000", "308203849000", "6B00")
    with pytest.raises(ApduError):
        JpkiSession(conn).read_certificate(Certificate.AUTH)


@pytest.mark.parametrize(
    "settings",
    [{}, {"filler": False}, {"t0_get_response": True}, {"wrong_le_6cxx": True}],
    ids=["default", "no-filler", "t0-61xx", "6cxx"],
)
def test_quirky_cards_read_and_sign(test_pki, settings):
    card = virtual(test_pki, **settings)
    session = JpkiSession(CardConnection(card))
    assert session.read_certificate(Certificate.AUTH) == test_pki.auth_certificate
    session.verify_pin(AUTH_KEY, "1234")
    signature = session.sign(AUTH_KEY, digest_info("sha512", digest("sha512", b"m")))
    assert len(signature) == 256


def test_verify_with_le_is_refused_by_a_strict_card(test_pki):
    card = virtual(test_pki)
    conn = CardConnection(card)
    conn.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))
    conn.transmit(bytes.fromhex("00A4020C020018"))
    assert conn.transmit(bytes.fromhex("00200080043132333400")).hex() == "6700"
    assert card.tries_left()["auth"] == 3


@given(st.text(max_size=20))
def test_pin_policies_accept_exactly_their_shape(text):
    auth_ok = len(text) == 4 and all(c in string.digits for c in text)
    sign_ok = (
        6 <= len(text) <= 16
        and all(c in string.ascii_uppercase + string.digits for c in text)
        and any(c.isdigit() for c in text)
        and any(c in string.ascii_uppercase for c in text)
    )
    for policy, ok in ((AUTH_PIN, auth_ok), (SIGN_PASSWORD, sign_ok)):
        if ok:
            assert policy.check(text) == bytearray(text.encode())
        else:
            with pytest.raises(PinFormatError) as err:
                policy.check(text)
            # The message is the rule alone: it never depends on (or echoes) the entry.
            with pytest.raises(PinFormatError) as reference:
                policy.check("\x00")
            assert str(err.value) == str(reference.value)


def test_basic_info_template_round_trip():
    data = basic_info_template("番号\u3000太郎", "東京都" * 40, "19800217", "1")
    info = parse_basic_info(data + b"\xff" * 10)
    assert (info.name, info.address, info.birth_date.isoformat(), info.sex) == (
        "番号\u3000太郎",
        "東京都" * 40,
        "1980-02-17",
        "1",
    )
    # DF21 lists where each field's tag starts in the file, as on real cards.
    assert data[:3] == b"\xff\x20\x82"  # a long address needs the long length form
    assert data[5:8] == b"\xdf\x21\x08"
    offsets = [int.from_bytes(data[8 + 2 * i : 10 + 2 * i], "big") for i in range(4)]
    assert [data[o : o + 2].hex() for o in offsets] == ["df22", "df23", "df24", "df25"]


@pytest.mark.parametrize(
    "data",
    ["FF2003DF2201", "FF2005DF22014100", "FF20", "DF2201410000", "FF2082FFFF00"],
)
def test_malformed_basic_info_is_an_error(data):
    with pytest.raises(InvalidResponseError):
        parse_basic_info(bytes.fromhex(data))


def test_6cxx_never_repeats_a_verify():
    conn = ScriptedConnection("9000", "9000", "6C04")
    with pytest.raises(ApduError):
        JpkiSession(conn).verify_pin(AUTH_KEY, "1234")
    assert [c for c in conn.sent if c.startswith("00200080")] == ["002000800431323334"]
