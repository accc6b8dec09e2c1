"""What mncctl prints: the status table, JSON, event lines, dates and counts."""

from __future__ import annotations

import datetime as dt
import functools
import gettext
import json
from collections.abc import Mapping
from typing import Any

from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD
from mncd.cli.text import N_, _, display_width, hanging, ngettext
from mncd.client import CertificateStatus, Event, KnownCard, Status, plain
from mncd.client.texts import (
    certificate_state_text,
    certificate_title,
    format_date,
    format_days_left,
    format_pin_tries,
    format_serial,
    next_step,
    source_text,
    state_text,
    token_text,
)
from mncd.i18n import translator
from mncd.jpki.calendar import japan

MAX_PIN_TRIES = {
    "auth": AUTH_PIN.max_tries,
    "sign": SIGN_PASSWORD.max_tries,
    "card-info": CARD_INFO_PIN.max_tries,
}
#: Every label of the status table (its values start in one column, after the widest label).
LABELS = (
    N_("State:"), N_("Reader:"), N_("Readers:"), N_("Token:"), N_("Card:"), N_("Expires:"),
    N_("Next step:"), N_("Why:"), N_("Source:"), N_("PIN tries:"), N_("Password tries:"),
    N_("Serial:"), N_("Issuer:"), N_("Fingerprint:"), N_("Algorithm:"),
)  # fmt: skip
#: Indent of the lines about a certificate, in terminal columns.
INDENT = 2
#: Keys of a certificate in GetStatus whose value 0 (or -1) means "not known".
UNKNOWN_WHEN_ZERO = ("not_before", "not_after", "last_seen")


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


def status_json(status: Status) -> str:
    """The status as pretty JSON: the daemon's keys, with values that are not known null
    (GetStatus sends 0, -1 or an empty string for them) and serials in upper-case hex."""
    return json.dumps(json_status(status.raw), indent=2, ensure_ascii=False)


def json_status(raw: Mapping[str, Any]) -> dict[str, Any]:
    """mncctl's JSON of a GetStatus answer (see the README)."""
    out = dict(raw)
    for which in ("auth", "sign"):
        if isinstance(raw.get(which), Mapping):
            out[which] = _json_certificate(raw[which])
    if isinstance(raw.get("cards"), list):
        out["cards"] = [
            _json_certificate(card) if isinstance(card, Mapping) else card for card in raw["cards"]
        ]
    return out


def _json_certificate(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: None if value == "" else value for key, value in data.items()}
    for key in UNKNOWN_WHEN_ZERO:
        if key in out and not out[key]:
            out[key] = None
    if "days_left" in out and not data.get("not_after"):
        out["days_left"] = None
    if isinstance(out.get("pin_tries_left"), int) and out["pin_tries_left"] < 0:
        out["pin_tries_left"] = None
    if isinstance(out.get("serial"), str):
        out["serial"] = format_serial(out["serial"]) or None
    return out


def label_width() -> int:
    """Columns of the status table's labels with their indent, in the user's language."""
    return _label_width(translator())


@functools.cache
def _label_width(catalog: gettext.NullTranslations) -> int:
    return INDENT + max(display_width(catalog.gettext(label)) for label in LABELS)


def _line(label: str, value: str, indent: str = " " * INDENT, width: int | None = None) -> str:
    """``label`` and ``value`` in the table's columns, the value wrapped to ``width`` under
    itself (None: not wrapped)."""
    return hanging(f"{indent}{pad(label, label_width() - len(indent))} ", value, width)


def format_certificate(
    which: str, cert: CertificateStatus, tz: dt.tzinfo | None = None, details: bool = False,
    width: int | None = None,
) -> list[str]:  # fmt: skip
    """Lines about one certificate of the status (``which`` is ``auth`` or ``sign``): its
    state, expiry, what to do and the tries left; with ``details`` also where it was read,
    serial, issuer, fingerprint and algorithm."""
    lines = [certificate_title(which)]
    tries = format_pin_tries(cert.pin_tries_left, MAX_PIN_TRIES.get(which, 0))
    pin_line = _line(
        _("PIN tries:") if which == "auth" else _("Password tries:"), tries, width=width
    )
    step = next_step(which, cert)
    if not cert.present and cert.source == "none":  # nothing read yet: never "not present"
        lines.append(_line(_("State:"), _("not known yet"), width=width))
        lines.append(_line(_("Next step:"), step, width=width))
        return lines
    if not cert.present:
        lines.append(_line(_("State:"), _("not on this card"), width=width))
        lines.append(_line(_("Why:"), step, width=width))
        if cert.pin_tries_left is not None:
            lines.append(pin_line)
        return lines
    lines.append(
        _line(_("State:"), certificate_state_text(cert.state) or _("unknown"), width=width)
    )
    if cert.state != "invalidated":
        expires = format_date(cert.not_after, tz or japan())  # the date in Japan, as days_left
        if cert.days_left is not None:
            expires = _("{date} ({days})").format(
                date=expires, days=format_days_left(cert.days_left)
            )
        lines.append(_line(_("Expires:"), expires, width=width))
    if step:
        lines.append(_line(_("Next step:"), step, width=width))
    if details:
        lines.append(_line(_("Source:"), source_text(cert.source), width=width))
    lines.append(pin_line)
    if not details:
        return lines
    for label, value in (
        (_("Serial:"), format_serial(cert.serial)),
        (_("Issuer:"), cert.issuer),
        (_("Fingerprint:"), cert.fingerprint),
        (_("Algorithm:"), cert.algorithm),
    ):
        if value:
            lines.append(_line(label, value, width=width))
    return lines


def format_status(
    status: Status, tz: dt.tzinfo | None = None, details: bool = False, width: int | None = None
) -> str:
    """The status for people: the card in or not, both certificates, days left, tries and what
    to do; ``details`` adds the card's id, where each certificate was read, serials, issuers,
    fingerprints and the other cards seen. Lines are wrapped to ``width`` (None: not)."""
    return "\n".join(_status_lines(status, tz, details, width))


def _status_lines(
    status: Status, tz: dt.tzinfo | None, details: bool, width: int | None
) -> list[str]:
    lines = [
        _line(_("State:"), state_text(status.state), indent="", width=width),
        _line(_("Reader:"), status.reader or _("(none)"), indent="", width=width),
    ]
    readers = status.readers
    if len(readers) > 1 or (readers and readers[0] != status.reader):
        lines.append(_line(_("Readers:"), ", ".join(readers), indent="", width=width))
    card_in = status.state in ("card-present", "reading")
    if card_in and status.token and status.token != "card":
        lines.append(_line(_("Token:"), token_text(status.token), indent="", width=width))
    if details and card_in and status.card_id:
        lines.append(_line(_("Card:"), status.card_id, indent="", width=width))
    for which in ("auth", "sign"):
        if isinstance(status.raw.get(which), Mapping):
            lines.append("")
            cert = status.certificate(which)
            if status.state == "reading" and cert.source == "cache":
                cert = cert._replace(source="reading")
            lines += format_certificate(which, cert, tz, details, width)
    others = [card for card in status.cards if card.card_id != status.card_id]
    if others and details:
        lines += ["", _("Other cards seen ('mncctl forget CARD' removes one you no longer have)")]
        lines += [f"  {format_known_card(card, tz)}" for card in others]
    elif others:
        text = ngettext(
            "{n} other card seen: 'mncctl status --details' lists it.",
            "{n} other cards seen: 'mncctl status --details' lists them.",
            len(others),
        ).format(n=len(others))
        lines += ["", hanging("", text, width)]
    return lines


def format_known_card(card: KnownCard, tz: dt.tzinfo | None = None) -> str:
    """``<id>  last seen 2026-05-01, expires 2029-04-30`` (or ``renewed``)."""
    parts = [_("last seen {date}").format(date=format_date(card.last_seen, tz))]
    if card.renewed_to:
        parts.append(_("renewed: now card {card}").format(card=card.renewed_to))
    elif card.not_after is not None:
        parts.append(_("expires {date}").format(date=format_date(card.not_after, japan())))
    return f"{card.card_id}  {_(', ').join(parts)}"


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


def event_lines(when: dt.datetime, event: Event, width: int | None = None) -> list[str]:
    """``mncctl watch``'s lines for people: the time in Japan, then what happened in words
    (none for a change another line already tells)."""
    stamp = when.astimezone(japan()).strftime("%Y-%m-%d %H:%M:%S ")
    return [hanging(stamp, text, width) for text in event_texts(event)]


def event_texts(event: Event) -> list[str]:
    """What ``event`` means, in sentences."""
    args = plain(event.args)
    values = list(args.values()) if isinstance(args, dict) else list(args)
    first = str(values[0]) if values else ""
    if event.name == "CardInserted":
        return [_("A card was inserted in {reader}.").format(reader=first)]
    if event.name == "CardRemoved":
        return [_("The card was taken out of {reader}.").format(reader=first)]
    if event.name == "CertificateStatusChanged" and len(values) >= 2:
        return [_("{certificate}: {state}.").format(
            certificate=certificate_title(str(values[0])),
            state=certificate_state_text(str(values[1])))]  # fmt: skip
    if event.name == "DaemonStarted":
        return [_("mncd started.")]
    if event.name == "DaemonStopped":
        return [_("mncd stopped.")]
    if event.name in ("Status", "PropertiesChanged") and isinstance(args, dict):
        texts = []
        if "state" in args or "State" in args:
            state = state_text(str(args.get("state", args.get("State"))))
            texts.append(_("Now: {state}.").format(state=state))
        readers = args.get("readers", args.get("Readers"))
        if isinstance(readers, list):  # (a property only named as changed comes as a text)
            texts.append(_("Readers: {readers}.").format(
                readers=", ".join(readers) if readers else _("(none)")))  # fmt: skip
        return texts
    return [f"{event.name} {' '.join(_json(value) for value in values)}".rstrip()]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def certificate_summary(certificate: bytes) -> str:
    """``serial 1A2B, expires 2029-05-31`` for a DER certificate (empty when unreadable)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(certificate)
    except ValueError:
        return ""
    expires = cert.not_valid_after_utc.astimezone(japan()).date().isoformat()
    return _("serial {serial}, expires {date}").format(
        serial=f"{cert.serial_number:X}", date=expires
    )
