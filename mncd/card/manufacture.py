"""The card's manufacture number (製造番号): which physical card this is, read without a PIN.

Record 1 of the application ``D3 92 10 00 31 00 01 01 01 00`` holds a BER-wrapped text whose
characters 2–15 are a 13-character number naming the physical card (jpki/myna ``src/unknown.rs``
reads it for its Mynaportal bridge). It does not change when the certificates are renewed, and it
is not the individual number. mncd uses it only to recognise the same card again, keeps only a
salted hash of it, and never logs it.

jpki/myna addresses the record by short file identifier 1 (READ RECORD ``00 B2 01 0C``, P2 =
SFI 1 << 3 | 4); that is what is sent here.
"""

from __future__ import annotations

from .apdu import SW, Apdu, CardConnection, CardProtocol
from .cardinfo import parse_tlvs
from .errors import ApduError, InvalidResponseError
from .jpki import select_df

MANUFACTURE_AID = bytes.fromhex("D3921000310001010100")
#: READ RECORD of record 1 in the EF with short file identifier 1.
RECORD = 1
SFI = 1
NUMBER_SLICE = slice(2, 15)


def read_record(record: int, sfi: int) -> Apdu:
    """READ RECORD ``record`` of the EF with short identifier ``sfi``, up to 256 bytes."""
    return Apdu(0x00, 0xB2, record, (sfi << 3) | 0x04, le=256)


def parse_manufacture_number(data: bytes) -> str | None:
    """The 13-character number from the record's bytes; None when they are not shaped so."""
    try:
        tlvs = parse_tlvs(data)
    except InvalidResponseError:
        return None
    if not tlvs:
        return None
    try:
        text = tlvs[0][1].decode("ascii")
    except UnicodeDecodeError:
        return None
    number = text[NUMBER_SLICE]
    if len(number) != NUMBER_SLICE.stop - NUMBER_SLICE.start or not number.isalnum():
        return None
    return number


def read_manufacture_number(connection: CardConnection) -> str | None:
    """The card's manufacture number, or None when this card has none that can be read (an
    older or foreign card, a malformed answer): then the card is simply not recognised.

    Selects another application than JPKI: call it before the JPKI AP is selected, never
    between a VERIFY and the operation it allows.
    """
    protocol = CardProtocol(connection)
    try:
        _, sw = protocol.exchange(select_df(MANUFACTURE_AID))
        if sw != SW.OK:
            return None
        data, sw = protocol.exchange(read_record(RECORD, SFI))
    except (InvalidResponseError, ApduError):  # garbled answers: not a number to go by
        return None
    if sw != SW.OK:
        return None
    return parse_manufacture_number(data)
