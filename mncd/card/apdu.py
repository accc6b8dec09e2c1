"""APDUs, status words and the transport-independent command protocol.

A :class:`CardConnection` moves raw bytes; :class:`CardProtocol` formats short APDUs, follows
``61xx`` (GET RESPONSE) and ``6Cxx`` (repeat with the right Le), and maps status words to errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from .errors import (
    ApduError,
    FileMissingError,
    InvalidResponseError,
    SecurityStatusError,
)

#: Most GET RESPONSE rounds followed for one command; a card that asks for more is broken.
MAX_RESPONSE_ROUNDS = 64


class SW(IntEnum):
    """Status words the My Number Card is known to answer."""

    OK = 0x9000
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    INCORRECT_P1P2 = 0x6A86
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


def sw_name(sw: int) -> str:
    """Hex form of a status word, with its name when known."""
    try:
        return f"{sw:04X} ({SW(sw).name})"
    except ValueError:
        return f"{sw:04X}"


@dataclass(frozen=True)
class Apdu:
    """A short command APDU (ISO 7816-4): data up to 255 bytes, Le up to 256 (``None``: no Le)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} out of range")
        if len(self.data) > 255:
            raise ValueError("short APDUs carry at most 255 data bytes")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ValueError("Le must be 1..256")

    def encode(self) -> bytes:
        """The APDU's bytes: header, Lc + data when there is data, Le when set."""
        out = bytes((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out += bytes((len(self.data),)) + self.data
        if self.le is not None:
            out += bytes((self.le & 0xFF,))
        return out


class CardConnection(Protocol):
    """Anything that carries one APDU to a card and brings back its response (data + SW1 SW2)."""

    def transmit(self, apdu: bytes) -> bytes:
        """Send raw APDU bytes; return the raw response including the two status bytes."""
        ...


def split_response(response: bytes) -> tuple[bytes, int]:
    """Split a raw response into data and status word."""
    if len(response) < 2:
        raise InvalidResponseError("card response shorter than a status word")
    return response[:-2], (response[-2] << 8) | response[-1]


class CardProtocol:
    """Sends APDUs over a connection and deals with chaining and length corrections."""

    def __init__(self, connection: CardConnection) -> None:
        self.connection = connection

    def exchange(self, apdu: Apdu) -> tuple[bytes, int]:
        """Send ``apdu``; follow ``61xx`` and ``6Cxx``; return data and the final status word."""
        data, sw = split_response(self.connection.transmit(apdu.encode()))
        rounds = 0
        if sw >> 8 == 0x6C and apdu.le is not None:
            # Wrong Le: the card says how many bytes it has; ask again with that Le. Only for
            # commands that ask for data: a VERIFY is never sent twice (it would spend a try).
            le = (sw & 0xFF) or 256
            data, sw = split_response(self.connection.transmit(_with_le(apdu, le).encode()))
        collected = data
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > MAX_RESPONSE_ROUNDS:
                raise InvalidResponseError("card keeps announcing more response data")
            le = (sw & 0xFF) or 256
            data, sw = split_response(
                self.connection.transmit(Apdu(0x00, 0xC0, 0, 0, le=le).encode())
            )
            collected += data
        return collected, sw

    def send(self, apdu: Apdu) -> bytes:
        """Send ``apdu`` and return its data; any status but ``9000`` raises a typed error."""
        data, sw = self.exchange(apdu)
        if sw != SW.OK:
            raise status_error(sw)
        return data


def _with_le(apdu: Apdu, le: int) -> Apdu:
    return Apdu(apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data, le)


def status_error(sw: int) -> ApduError:
    """The typed error for a non-success status word."""
    if sw == SW.FILE_NOT_FOUND:
        return FileMissingError(sw, "file not found on the card")
    if sw == SW.SECURITY_STATUS_NOT_SATISFIED:
        return SecurityStatusError(sw, "the PIN must be verified first")
    return ApduError(sw, f"card answered status {sw_name(sw)}")
