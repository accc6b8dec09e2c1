"""The card-info input support application (券面事項入力補助AP): basic four information only.

Reads name, address, birth date and sex after the 4-digit card-info PIN, and changes that PIN.
The individual number (個人番号, EF 0001 of this AP) is never selected or read by mncd.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .errors import InvalidResponseError
from .jpki import (
    ApplicationSession,
    read_binary,
)
from .pin import CARD_INFO_PIN

CARD_INFO_AID = bytes.fromhex("D3921000310001010408")
PIN_FID = 0x0011
BASIC_INFO_FID = 0x0002
#: The individual-number EF. Listed only so tests can assert it is never selected.
INDIVIDUAL_NUMBER_FID = 0x0001

BASIC_INFO_TEMPLATE = 0xFF20
TAG_NAME = 0xDF22
TAG_ADDRESS = 0xDF23
TAG_BIRTH_DATE = 0xDF24
TAG_SEX = 0xDF25
MAX_BASIC_INFO_SIZE = 4096
#: Enough bytes to know the template's full length (tag 2 + length up to 3).
HEADER_READ = 7


class Sex:
    """ISO 5218 codes as the card stores them."""

    UNKNOWN = "0"
    MALE = "1"
    FEMALE = "2"
    NOT_APPLICABLE = "9"
    ALL = frozenset({"0", "1", "2", "9"})


@dataclass(frozen=True)
class BasicInfo:
    """基本4情報: the personal data the signing certificate also carries."""

    name: str
    address: str
    birth_date: dt.date
    sex: str  # ISO 5218 digit

    def __repr__(self) -> str:  # never print personal data by accident
        return "BasicInfo(<personal data>)"


def parse_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Parse a run of BER TLVs with one- or two-byte tags and short or long lengths."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        if data[i] in (0x00, 0xFF) and (i + 1 >= len(data) or data[i + 1] in (0x00, 0xFF)):
            break  # padding after the last object
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            if i >= len(data):
                raise InvalidResponseError("truncated BER tag")
            tag = (tag << 8) | data[i]
            i += 1
        length, i = _parse_length(data, i)
        if i + length > len(data):
            raise InvalidResponseError("BER value runs past the data")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _parse_length(data: bytes, i: int) -> tuple[int, int]:
    if i >= len(data):
        raise InvalidResponseError("truncated BER length")
    first = data[i]
    i += 1
    if first < 0x80:
        return first, i
    count = first & 0x7F
    if count == 0 or count > 2 or i + count > len(data):
        raise InvalidResponseError("unsupported BER length")
    return int.from_bytes(data[i : i + count], "big"), i + count


def template_length(header: bytes) -> int:
    """Total size (tag + length + value) of the basic-info template from its first bytes."""
    if len(header) < 3 or (header[0] << 8 | header[1]) != BASIC_INFO_TEMPLATE:
        raise InvalidResponseError("basic information does not start with its template")
    length, start = _parse_length(header, 2)
    return start + length


def parse_basic_info(data: bytes) -> BasicInfo:
    """Decode the FF20 template of the basic-information EF."""
    outer = parse_tlvs(data)
    if not outer or outer[0][0] != BASIC_INFO_TEMPLATE:
        raise InvalidResponseError("basic information template missing")
    fields = dict(parse_tlvs(outer[0][1]))
    try:
        name = fields[TAG_NAME].decode("utf-8")
        address = fields[TAG_ADDRESS].decode("utf-8")
        birth = fields[TAG_BIRTH_DATE].decode("ascii")
        sex = fields[TAG_SEX].decode("ascii")
        birth_date = dt.datetime.strptime(birth, "%Y%m%d").date()
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidResponseError("basic information is malformed") from exc
    if sex not in Sex.ALL:
        raise InvalidResponseError("basic information has an unknown sex code")
    return BasicInfo(name=name, address=address, birth_date=birth_date, sex=sex)


class CardInfoSession(ApplicationSession):
    """Reads the basic four information from the card-info AP."""

    AID = CARD_INFO_AID
    NAME = "card-info"

    def pin_tries_left(self) -> int:
        """Tries left on the card-info PIN, without spending one."""
        return self._tries_left(PIN_FID, CARD_INFO_PIN)

    def verify_pin(self, pin: str | bytes | bytearray) -> None:
        """VERIFY the card-info PIN. Its format is checked first; a malformed PIN is never sent."""
        self._verify(PIN_FID, CARD_INFO_PIN, pin)

    def change_pin(self, new_pin: str | bytes | bytearray) -> None:
        """Replace the card-info PIN by ``new_pin``; the current one must have been verified in
        this session. The new PIN's shape is checked first: a malformed one is never sent."""
        self._change(PIN_FID, CARD_INFO_PIN, new_pin)

    def read_basic_info(self) -> BasicInfo:
        """Name, address, birth date and sex; the card-info PIN must be verified."""
        self._select_ef(BASIC_INFO_FID)
        header = self.protocol.send(read_binary(0, HEADER_READ))
        total = template_length(header)
        if total > MAX_BASIC_INFO_SIZE:
            raise InvalidResponseError("basic information larger than possible")
        data = bytearray(header[:total])
        while len(data) < total:
            chunk = self.protocol.send(read_binary(len(data), min(256, total - len(data))))
            if not chunk:
                raise InvalidResponseError("card returned no data for READ BINARY")
            data += chunk
        return parse_basic_info(bytes(data[:total]))
