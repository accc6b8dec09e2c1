"""The card layer against the virtual card through real pcscd + vpcd."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mncd.card import cardinfo
from mncd.card.digestinfo import digest, digest_info
from mncd.card.errors import (
    CardRemovedError,
    NoCardError,
    NotJpkiCardError,
    PinBlockedError,
    PinFormatError,
    PinIncorrectError,
    SecurityStatusError,
)
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, Certificate, JpkiSession, TokenKind
from mncd.card.manufacture import (
    MANUFACTURE_AID,
    parse_manufacture_number,
    read_manufacture_number,
)
from mncd.card.pcsc import PcscContext
from mncd.jpki import certificates
from mncd.vcard.profile import stable_manufacture_number

HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@pytest.fixture
def context(sandbox):
    with PcscContext() as ctx:
        yield ctx


def verify_rsa(cert_der: bytes, signature: bytes, data: bytes, hash_name: str) -> None:
    public_key = x509.load_der_x509_certificate(cert_der).public_key()
    public_key.verify(signature, data, padding.PKCS1v15(), HASHES[hash_name])


def test_readers_are_the_sandbox_vpcd_slots(context):
    assert context.list_readers() == ["Virtual PCD 00 00", "Virtual PCD 00 01"]


def test_reads_public_certificates_without_filler(context, card):
    expected = card.certificates()
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        assert session.read_certificate(Certificate.AUTH) == expected["auth"]
        assert session.read_certificate(Certificate.AUTH_CA) == expected["auth-ca"]
        assert session.read_certificate(Certificate.SIGN_CA) == expected["sign-ca"]
        assert session.read_token_info().kind is TokenKind.CARD
    summary = certificates.summarize(expected["auth"])
    assert summary.algorithm == "rsa2048"
    assert summary.days_left() == card.profile.not_after_days


def test_signing_certificate_needs_the_signing_password(context, card):
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        with pytest.raises(SecurityStatusError):
            session.read_certificate(Certificate.SIGN)
        session.verify_pin(SIGN_KEY, card.profile.sign_password)
        der = session.read_certificate(Certificate.SIGN)
    assert der == card.certificates()["sign"]
    data = certificates.personal_data(der)
    assert data.name == card.profile.name
    assert data.address == card.profile.address
    assert data.gregorian_birth_date == card.profile.birth_date.replace("-", "")
    assert data.birth_date.startswith("4")  # 1990 is in the Heisei era


def test_tries_left_does_not_spend_a_try(context, card):
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        for _ in range(4):
            assert session.pin_tries_left(AUTH_KEY) == 3
            assert session.pin_tries_left(SIGN_KEY) == 5
    assert card.tries() == {"auth": 3, "sign": 5, "card_info": 3}


def test_wrong_pin_decrements_and_right_pin_restores(context, card):
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        with pytest.raises(PinIncorrectError) as wrong:
            session.verify_pin(AUTH_KEY, "9999")
        assert wrong.value.tries_left == 2
        assert "9999" not in str(wrong.value)
        assert session.pin_tries_left(AUTH_KEY) == 2
        session.verify_pin(AUTH_KEY, card.profile.auth_pin)
        assert session.pin_tries_left(AUTH_KEY) == 3


@pytest.mark.parametrize("blocked_sw", ["6983", "6984"])
def test_blocked_pin(context, insert_card, blocked_sw):
    card = insert_card(blocked_sw=blocked_sw)
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        for left in (2, 1):
            with pytest.raises(PinIncorrectError) as wrong:
                session.verify_pin(AUTH_KEY, "0000")
            assert wrong.value.tries_left == left
        with pytest.raises(PinBlockedError):  # the try that uses the last one: 63C0
            session.verify_pin(AUTH_KEY, "0000")
        with pytest.raises(PinBlockedError):  # later tries: 6983 or 6984
            session.verify_pin(AUTH_KEY, card.profile.auth_pin)
        assert session.pin_tries_left(AUTH_KEY) == 0
    assert card.commands()[-2].startswith("0020008004")
    assert card.tries()["auth"] == 0


MALFORMED = [
    (AUTH_KEY, "123"),
    (AUTH_KEY, "12345"),
    (AUTH_KEY, "12a4"),
    (AUTH_KEY, "１２３４"),  # full-width digits
    (AUTH_KEY, ""),
    (SIGN_KEY, "abc123"),  # lower case
    (SIGN_KEY, "ABCDEF"),  # no digit
    (SIGN_KEY, "123456"),  # no letter
    (SIGN_KEY, "AB12"),  # too short
    (SIGN_KEY, "ABCDEFGH123456789"),  # 17 characters
    (SIGN_KEY, "ABC 123"),
    (SIGN_KEY, "ÄBC123"),
]


def test_malformed_pins_never_reach_the_card(context, card):
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        session.read_certificate(Certificate.AUTH)
        card.commands(clear=True)
        for key, pin in MALFORMED:
            with pytest.raises(PinFormatError) as err:
                session.verify_pin(key, pin)
            assert pin not in str(err.value) or not pin
    assert card.commands() == []
    assert card.tries() == {"auth": 3, "sign": 5, "card_info": 3}


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("key", [AUTH_KEY, SIGN_KEY], ids=["auth", "sign"])
def test_signatures_verify_against_the_certificate(context, card, hash_name, key):
    message = f"mncd test {hash_name} {key.name}".encode()
    pin = card.profile.auth_pin if key is AUTH_KEY else card.profile.sign_password
    with context.connect(card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        session.verify_pin(key, pin)
        signature = session.sign(key, digest_info(hash_name, digest(hash_name, message)))
    cert = card.certificates()["auth" if key is AUTH_KEY else "sign"]
    verify_rsa(cert, signature, message, hash_name)


def test_minimal_apdu_sequence_for_a_signature(context, card):
    with context.connect(card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        session.verify_pin(AUTH_KEY, card.profile.auth_pin)
        session.sign(AUTH_KEY, digest_info("sha256", digest("sha256", b"x")))
    headers = [c[:8] for c in card.commands()]
    assert headers == ["00A4040C", "00A4020C", "00200080", "00A4020C", "802A0080"]
    assert b"1234".hex() not in "".join(card.commands())  # the log masks PINs


def test_key_needs_its_pin_and_reset_forgets_it(context, card):
    info = digest_info("sha256", digest("sha256", b"x"))
    with context.connect(card.reader) as conn:
        with conn.transaction(reset_after=True):
            session = JpkiSession(conn)
            with pytest.raises(SecurityStatusError):
                session.sign(AUTH_KEY, info)
            session.verify_pin(AUTH_KEY, card.profile.auth_pin)
            session.sign(AUTH_KEY, info)
        # The transaction ended with a reset: the verified PIN is gone.
        with conn.transaction(), pytest.raises(SecurityStatusError):
            JpkiSession(conn).sign(AUTH_KEY, info)


def test_reselecting_the_application_logs_out(context, card):
    info = digest_info("sha256", digest("sha256", b"x"))
    with context.connect(card.reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        session.verify_pin(AUTH_KEY, card.profile.auth_pin)
        fresh = JpkiSession(conn)  # a second session selects the AP again
        with pytest.raises(SecurityStatusError):
            fresh.sign(AUTH_KEY, info)


def test_card_pulled_during_signature_is_a_typed_error(context, card):
    card.control.pull_on("802A", slot=card.slot)
    with context.connect(card.reader) as conn:
        session = JpkiSession(conn)
        session.verify_pin(AUTH_KEY, card.profile.auth_pin)
        with pytest.raises(CardRemovedError):
            session.sign(AUTH_KEY, digest_info("sha256", digest("sha256", b"x")))
    with pytest.raises(NoCardError):
        context.connect(card.reader)
    card.reinsert()
    with context.connect(card.reader) as conn:
        assert JpkiSession(conn).pin_tries_left(AUTH_KEY) == 3


def test_card_pulled_during_certificate_read(context, card):
    card.control.pull_on("00B00100", slot=card.slot)
    with context.connect(card.reader) as conn, pytest.raises(CardRemovedError):
        JpkiSession(conn).read_certificate(Certificate.AUTH)


def test_not_a_my_number_card(context, insert_card):
    card = insert_card(jpki=False)
    with context.connect(card.reader) as conn, pytest.raises(NotJpkiCardError):
        JpkiSession(conn).read_certificate(Certificate.AUTH)


def test_basic_four_information_and_never_the_individual_number(context, insert_card):
    card = insert_card(address="大阪府大阪市北区中之島一丁目三番二十号", sex="1")
    with context.connect(card.reader) as conn, conn.transaction(reset_after=True):
        session = cardinfo.CardInfoSession(conn)
        session.select_application()
        assert session.pin_tries_left() == 3
        session.verify_pin(card.profile.card_info_pin)
        info = session.read_basic_info()
    assert info.name == card.profile.name
    assert info.address == "大阪府大阪市北区中之島一丁目三番二十号"
    assert info.birth_date == dt.date.fromisoformat(card.profile.birth_date)
    assert info.sex == "1"
    assert "personal" in repr(info) and card.profile.name not in repr(info)
    assert not any(cmd.startswith("00A4020C020001") for cmd in card.commands())


def test_card_info_wrong_pin(context, card):
    with context.connect(card.reader) as conn, pytest.raises(PinIncorrectError) as wrong:
        cardinfo.CardInfoSession(conn).verify_pin("0000")
    assert wrong.value.tries_left == 2
    assert card.tries()["card_info"] == 2


def test_manufacture_number_is_read_without_a_pin_and_names_the_physical_card(context, insert_card):
    card = insert_card(name="physical-card-a")
    first_auth = card.certificates()["auth"]
    with context.connect(card.reader) as conn:
        number = read_manufacture_number(conn)
    assert number == stable_manufacture_number("physical-card-a")
    assert card.commands() == [
        "00A4040C0A" + MANUFACTURE_AID.hex().upper(),
        "00B2010C00",  # record 1 of the EF with short identifier 1, as jpki/myna reads it
    ]
    # The same card renewed (new keys and certificates) keeps its number; another has another.
    card.remove()
    renewed = insert_card(name="physical-card-a", generation=2, slot=1)
    other = insert_card(name="physical-card-b", slot=0)
    with context.connect(renewed.reader) as conn:
        assert read_manufacture_number(conn) == number
    assert renewed.certificates()["auth"] != first_auth
    with context.connect(other.reader) as conn:
        assert read_manufacture_number(conn) not in (None, number)


def test_a_card_without_a_readable_manufacture_number(context, insert_card):
    card = insert_card(manufacture_record=False)
    with context.connect(card.reader) as conn:
        assert read_manufacture_number(conn) is None
    assert parse_manufacture_number(b"\x04\x03abc") is None  # too short to hold one
    assert parse_manufacture_number(b"\x04\x0f00123456789012\xff") is None  # not text
    assert parse_manufacture_number(b"\x04\x0f001234567890123") == "1234567890123"
