"""GetStatus's values in words for people: the daemon's state, each certificate's state, its
expiry date and days left in Japan's calendar, what to do next, PIN tries. mncctl status and the
window (mncd-window) say the same things in the same words, from the same catalog."""

from __future__ import annotations

import datetime as dt

from mncd.client.results import CertificateStatus
from mncd.i18n import N_, ngettext
from mncd.i18n import gettext as _


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
