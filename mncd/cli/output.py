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


def certificate_title(which: str) -> str:
    return {
        "auth": _("User-authentication certificate"),
        "sign": _("Signing certificate"),
    }.get(which, which)


def state_text(state: str) -> str:
    """The daemon's state in words, with what to do where something is missing."""
    table = {
        "pcsc-unavailable": N_(
            "the smart-card service pcscd is not running: install and start it with 'sudo apt "
            "install pcscd && sudo systemctl enable --now pcscd.socket'"
        ),
        "no-reader": N_("no card reader is connected: connect one"),
        "no-card": N_("no card in the reader: insert your My Number Card"),
        "reading": N_("reading the card"),
        "card-present": N_("My Number Card present"),
        "unknown-card": N_("the card in the reader is not a My Number Card"),
        "unreadable-card": N_("the card could not be read: take it out and insert it again"),
    }
    return _(table[state]) if state in table else state or _("unknown")


def token_text(token: str) -> str:
    table = {
        "card": N_("My Number Card"),
        "android": N_("Android smartphone certificate"),
        "iphone": N_("iPhone certificate"),
        "juki": N_("Basic Resident Register card"),
        "unknown": N_("unknown"),
    }
    return _(table[token]) if token in table else token


def certificate_state_text(state: str) -> str:
    table = {
        "valid": N_("valid"),
        "expiring": N_("expiring soon"),
        "expired": N_("expired"),
        "invalidated": N_("invalidated (revoked)"),
        "unknown": N_("unknown"),
    }
    return _(table[state]) if state in table else state


def source_text(source: str) -> str:
    table = {
        "card": N_("read from the card"),
        "cache": N_("as last read from the card (cached)"),
        "reading": N_("as last read from this card; it is being read now"),
        "none": N_("none"),
    }
    return _(table[source]) if source in table else source


def next_step(which: str, cert: CertificateStatus) -> str:
    """What the user can do about the certificate's state ("" when nothing is needed)."""
    if not cert.present and cert.source == "none":
        return _("It becomes known when your My Number Card is inserted and read.")
    if not cert.present:
        if which == "sign":
            return _(
                "Cards of children under 15 carry no signing certificate. From 15, one can be "
                "issued at your municipal office (bring your My Number Card)."
            )
        return _("One can be issued at your municipal office (bring your My Number Card).")
    if cert.state == "invalidated" and which == "sign" and not cert.certificate_held:
        # What was invalidated is the certificate mncd read last; the office may have written a
        # new one since, which the card gives only after the signing password.
        return _(
            "Get a new one issued at your municipal office (bring your My Number Card). If you "
            "already have, sign something or run 'mncctl cert show sign': mncd reads the new "
            "one after your signing password."
        )
    if cert.state == "invalidated":
        return _(
            "It can no longer be used. Get a new one issued at your municipal office (bring your "
            "My Number Card)."
        )
    if cert.state == "expired":
        return _(
            "It can no longer be used. Get a new one issued at your municipal office (bring your "
            "My Number Card)."
        )
    if cert.state == "expiring":
        return _(
            "Renewal is open until it expires: renew it at your municipal office (bring your My "
            "Number Card)."
        )
    if (cert.state == "unknown" or not cert.state) and which == "sign" and cert.source == "card":
        # the card gives the signing certificate only after the signing password
        return _(
            "The card gives it only after the signing password: it becomes known the first time "
            "you sign, or with 'mncctl cert show sign'."
        )
    if cert.state == "unknown" or not cert.state:
        return _("Its state becomes known when the card is next read in a reader.")
    return ""


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


def format_serial(serial: str) -> str:
    """A serial number as mncctl prints it everywhere: upper-case hex."""
    return serial.upper()


def format_date(when: dt.datetime | None, tz: dt.tzinfo | None = None) -> str:
    """A date in ``tz`` (local time when None); ``unknown`` for None."""
    if when is None:
        return _("unknown")
    return when.astimezone(tz).date().isoformat()


def format_days_left(days: int) -> str:
    """``123 days left``, ``expires today``, ``expired 4 days ago`` (days in Japan)."""
    if days > 0:
        return ngettext("{n} day left", "{n} days left", days).format(n=days)
    if days == 0:
        return _("expires today")
    return ngettext("expired {n} day ago", "expired {n} days ago", -days).format(n=-days)


def format_pin_tries(tries: int | None, maximum: int) -> str:
    """``3/3``, ``0/5 (locked: ...)`` or ``unknown``."""
    if tries is None:
        return _("unknown")
    if tries == 0:
        return _("0/{max} (locked: have it reset at your municipal office)").format(max=maximum)
    return f"{tries}/{maximum}"


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
