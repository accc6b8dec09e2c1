"""What mncctl prints: the status table, JSON, event lines, dates and counts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import unicodedata
from collections.abc import Mapping
from typing import Any

from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD
from mncd.client import CertificateStatus, Event, KnownCard, Status, plain
from mncd.jpki.calendar import JAPAN

CERTIFICATE_TITLES = {
    "auth": "利用者証明用電子証明書 (user authentication)",
    "sign": "署名用電子証明書 (signing)",
}
MAX_PIN_TRIES = {
    "auth": AUTH_PIN.max_tries,
    "sign": SIGN_PASSWORD.max_tries,
    "card-info": CARD_INFO_PIN.max_tries,
}

STATE_TEXT = {
    "pcsc-unavailable": "the smart-card service is not available (is pcscd running?)",
    "no-reader": "no card reader connected",
    "no-card": "no card in the reader",
    "reading": "reading the card (カードを読み取り中)",
    "card-present": "My Number Card present",
    "unknown-card": "the card in the reader is not a My Number Card",
    "unreadable-card": "the card could not be read: take it out and insert it again "
    "(カードを読み取れません)",
}
TOKEN_TEXT = {
    "card": "My Number Card",
    "android": "Android smartphone (スマホ用電子証明書)",
    "iphone": "iPhone (スマホ用電子証明書)",
    "juki": "Basic Resident Register card (住基カード)",
    "unknown": "unknown",
}
CERTIFICATE_STATE_TEXT = {
    "valid": "valid",
    "expiring": "expiring soon: renew it at your municipal office (更新してください)",
    "expired": "expired (有効期限切れ)",
    "invalidated": "invalidated (失効)",
    "unknown": "unknown",
}
SOURCE_TEXT = {
    "card": "card",
    "cache": "cache (as last read from the card)",
    "reading": "cache (as last read from this card; it is being read now)",
    "none": "none",
}


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide and full-width characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


def status_json(status: Status) -> str:
    """The status as pretty JSON, every key as the daemon sent it."""
    return json.dumps(status.raw, indent=2, ensure_ascii=False)


def format_date(when: dt.datetime | None, tz: dt.tzinfo | None = None) -> str:
    """A date in ``tz`` (local time when None); ``unknown`` for None."""
    if when is None:
        return "unknown"
    return when.astimezone(tz).date().isoformat()


def format_days_left(days: int) -> str:
    """``123 days left``, ``expires today``, ``expired 4 days ago`` (days in Japan)."""
    if days > 1:
        return f"{days} days left"
    if days == 1:
        return "1 day left"
    if days == 0:
        return "expires today"
    if days == -1:
        return "expired 1 day ago"
    return f"expired {-days} days ago"


def format_pin_tries(tries: int | None, maximum: int) -> str:
    """``3/3``, ``0/5 (blocked)`` or ``unknown``."""
    if tries is None:
        return "unknown"
    if tries == 0:
        return f"0/{maximum} (blocked: reset it at your municipal office)"
    return f"{tries}/{maximum}"


def _described(value: str, table: Mapping[str, str]) -> str:
    """``value (description)``, or the value alone when the description adds nothing."""
    text = table.get(value)
    if not value:
        return "unknown"
    if text is None or text == value:
        return value
    return f"{value} ({text})"


def format_certificate(
    which: str, cert: CertificateStatus, tz: dt.tzinfo | None = None
) -> list[str]:
    """Lines about one certificate of the status (``which`` is ``auth`` or ``sign``)."""
    lines = [CERTIFICATE_TITLES.get(which, which)]
    tries = format_pin_tries(cert.pin_tries_left, MAX_PIN_TRIES.get(which, 0))
    pin_line = f"  {'PIN tries:':13} {tries}"
    if not cert.present and cert.source == "none":  # nothing read yet: never "not present"
        lines.append(f"  {'Certificate:':13} not known yet")
        return lines
    if not cert.present:
        lines.append(f"  {'Certificate:':13} not present")
        if cert.pin_tries_left is not None:
            lines.append(pin_line)
        return lines
    expires = format_date(cert.not_after, tz or JAPAN)  # the date in Japan, as days_left counts
    if cert.days_left is not None:
        expires += f" ({format_days_left(cert.days_left)})"
    fields = [
        ("State:", CERTIFICATE_STATE_TEXT.get(cert.state, cert.state) or "unknown"),
        ("Expires:", expires),
        ("Source:", SOURCE_TEXT.get(cert.source, cert.source)),
    ]
    lines += [f"  {label:13} {value}" for label, value in fields]
    lines.append(pin_line)
    for label, value in (
        ("Serial:", cert.serial),
        ("Issuer:", cert.issuer),
        ("Fingerprint:", cert.fingerprint),
        ("Algorithm:", cert.algorithm),
    ):
        if value:
            lines.append(f"  {label:13} {value}")
    return lines


def format_status(status: Status, tz: dt.tzinfo | None = None) -> str:
    """The human-readable status table."""
    lines = [
        f"{'State:':10} {_described(status.state, STATE_TEXT)}",
        f"{'Reader:':10} {status.reader or '(none)'}",
    ]
    readers = status.readers
    if len(readers) > 1 or (readers and readers[0] != status.reader):
        lines.append(f"{'Readers:':10} {', '.join(readers)}")
    if status.token:
        lines.append(f"{'Token:':10} {_described(status.token, TOKEN_TEXT)}")
    if status.card_id:
        lines.append(f"{'Card:':10} {status.card_id}")
    for which in ("auth", "sign"):
        if isinstance(status.raw.get(which), Mapping):
            lines.append("")
            cert = status.certificate(which)
            if status.state == "reading" and cert.source == "cache":
                cert = dataclasses.replace(cert, source="reading")
            lines += format_certificate(which, cert, tz)
    others = [card for card in status.cards if card.card_id != status.card_id]
    if others:
        lines += ["", "Other cards seen (mncctl forget CARD removes one you no longer have)"]
        lines += [f"  {format_known_card(card, tz)}" for card in others]
    return "\n".join(lines)


def format_known_card(card: KnownCard, tz: dt.tzinfo | None = None) -> str:
    """``<id>  last seen 2026-05-01, expires 2029-04-30`` (or ``renewed``)."""
    parts = [f"last seen {format_date(card.last_seen, tz)}"]
    if card.renewed_to:
        parts.append(f"renewed: now card {card.renewed_to}")
    elif card.not_after is not None:
        parts.append(f"expires {format_date(card.not_after, JAPAN)}")
    return f"{card.card_id}  {', '.join(parts)}"


def format_event(when: dt.datetime, event: Event, *, as_json: bool = False) -> str:
    """One line of ``mncctl watch``: timestamp, event name, arguments."""
    args = plain(event.args)
    stamp = when.isoformat(timespec="seconds")
    if as_json:
        return json.dumps({"time": stamp, "event": event.name, "args": args}, ensure_ascii=False)
    if isinstance(args, dict):
        rendered = [f"{key}={_json(value)}" for key, value in args.items()]
    else:
        rendered = [_json(value) for value in args]
    return " ".join([stamp, event.name, *rendered])


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def certificate_summary(certificate: bytes) -> str:
    """``serial 1A2B, expires 2029-05-31`` for a DER certificate (empty when unreadable)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(certificate)
    except ValueError:
        return ""
    expires = cert.not_valid_after_utc.astimezone(JAPAN).date().isoformat()
    return f"serial {cert.serial_number:X}, expires {expires}"
