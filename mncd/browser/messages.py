"""What the sites' pages ask and what they expect back (facts observed by the jpki/myna
project; docs/browser.md), each in one place: the request's fields, checked strictly, and the
answers, with error messages in Japanese for the page to show."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from mncd.api import MAX_SERVICE_DIGESTS

#: The page origins the bridge serves: https on a ``.go.jp`` host (any port).
SITE = re.compile(r"https://(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+go\.jp(?::[0-9]{1,5})?")
MODES = ("check", "01", "02", "04", "05")
#: Modes that use the card and name a service.
SERVICE_ID = "01"
#: Fields a request may have: what the page sends, and the origin the extension adds (the
#: page's origin as the browser reports it to the extension, never what the page claims).
FIELDS = frozenset({"mode", "service_id", "digest", "origin"})
#: Most digests one ``02`` request signs (the daemon's limit for one PIN).
MAX_DIGESTS = MAX_SERVICE_DIGESTS
#: Longest DigestInfo accepted (SHA-512's is 83 bytes).
MAX_DIGEST_INFO = 128
OK = "0"
FAILED = "1"


class RequestError(Exception):
    """A request the bridge refuses; its text is the Japanese message the page gets."""


@dataclass(frozen=True)
class Request:
    mode: str
    origin: str
    digests: tuple[bytes, ...] = ()


def parse_request(message: Any) -> Request:
    """The request in ``message``, every field checked; RequestError otherwise."""
    if not isinstance(message, dict):
        raise RequestError("要求の形式が正しくありません。")
    unknown = set(message) - FIELDS
    if unknown:
        raise RequestError("要求に不明な項目があります。")
    mode = message.get("mode")
    if mode not in MODES:
        raise RequestError("不明な処理が要求されました。")
    origin = message.get("origin")
    if mode == "check" and origin is None:  # the extension's popup, not a page
        origin = ""
    elif not isinstance(origin, str) or not SITE.fullmatch(origin):
        raise RequestError("このサイトからの要求には応じられません。")
    if mode in ("check", "05"):
        if set(message) - {"mode", "origin"}:
            raise RequestError("要求に不要な項目があります。")
        return Request(mode, origin)
    if message.get("service_id") != SERVICE_ID:
        raise RequestError("サービスの指定が正しくありません。")
    if mode == "04":
        if "digest" in message:
            raise RequestError("要求に不要な項目があります。")
        return Request(mode, origin)
    digest = message.get("digest")
    if mode == "02" and isinstance(digest, list):
        if not 0 < len(digest) <= MAX_DIGESTS:
            raise RequestError("署名するデータの数が正しくありません。")
        return Request(mode, origin, tuple(_digest(item) for item in digest))
    return Request(mode, origin, (_digest(digest),))


def _digest(value: Any) -> bytes:
    """One base64 DigestInfo of a request."""
    if not isinstance(value, str) or not 0 < len(value) <= 4 * MAX_DIGEST_INFO:
        raise RequestError("署名するデータの形式が正しくありません。")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("署名するデータの形式が正しくありません。") from None
    if not 0 < len(data) <= MAX_DIGEST_INFO:
        raise RequestError("署名するデータの形式が正しくありません。")
    return data


def certificate_text(der: bytes) -> str:
    """A certificate as the pages take it: base64 of the DER without ``=`` padding."""
    return base64.b64encode(der).decode("ascii").rstrip("=")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hex_text(text: str) -> str:
    """A card-info field as the pages take it: the hex of its UTF-8 text."""
    return text.encode("utf-8").hex()


def error(message: str, mode: str | None = None) -> dict[str, str]:
    """An error answer."""
    answer = {"result": FAILED, "message": message}
    if mode is not None:
        answer["mode"] = mode
    return answer
