"""Native messaging's framing (Chromium and Firefox alike): a 4-byte length in native byte
order (little-endian on every machine mncd runs on), then that many bytes of UTF-8 JSON."""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

#: Largest message taken from the browser: a request carries at most 16 short digests.
MAX_REQUEST = 64 * 1024
#: Largest message sent to the browser (Chromium refuses more than 1 MiB from a host).
MAX_ANSWER = 1024 * 1024
_LENGTH = struct.Struct("<I")


class FramingError(Exception):
    """The browser sent something that is not one well-formed message."""


def read_message(stream: BinaryIO, limit: int = MAX_REQUEST) -> Any | None:
    """The next message (decoded JSON), or None at the end of the stream."""
    header = _read_exactly(stream, _LENGTH.size, at_start=True)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > limit:
        raise FramingError(f"a message of {length} bytes is larger than {limit}")
    body = _read_exactly(stream, length)
    assert body is not None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FramingError("the message is not UTF-8 JSON") from exc


def _read_exactly(stream: BinaryIO, size: int, at_start: bool = False) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            if at_start and not data:
                return None
            raise FramingError("the message ended early")
        data += chunk
    return data


def write_message(stream: BinaryIO, message: Any) -> None:
    """Send one message (UTF-8 JSON) to the browser."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_ANSWER:
        raise ValueError("answer too large for the browser")
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()
