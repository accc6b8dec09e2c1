"""The card page: the reader and card, each certificate (state, expiry date and days left in
Japan's calendar, what to do next: mncctl status's words) and the tries left on each PIN, read
live from the card; with the actions on them (change a PIN, show or export a certificate)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from gi.repository import Adw, Gtk

from mncd.cli.output import MAX_PIN_TRIES
from mncd.cli.text import capitalized, pin_label
from mncd.client import CertificateStatus, PinStatus, Status
from mncd.client.texts import (
    certificate_state_text,
    certificate_title,
    format_date,
    format_days_left,
    format_pin_tries,
    next_step,
    source_text,
    state_text,
)
from mncd.i18n import gettext as _
from mncd.jpki.calendar import japan
from mncd.window.backend import Snapshot
from mncd.window.widgets import button, group, label_of, row

#: The PINs the window shows, in order.
PINS = ("auth", "sign", "card-info")


class CardPage:
    """Draws a :class:`Snapshot`; ``actions`` are the window's: ``change_pin(which)``,
    ``show_certificate(which)``, ``export_certificate(which)``, ``renewal_info()``."""

    #: The matters this page can move the focus to.
    MATTERS = ("auth", "sign", "pin-auth", "pin-sign", "pin-card-info")

    def __init__(self, actions: Any) -> None:
        self.actions = actions
        self.widget = Adw.PreferencesPage()
        self.widget.set_name("card")
        self.groups: list[Any] = []
        #: Widgets to focus for a matter (``auth``, ``sign``, ``pin-auth``, ...).
        self.anchors: dict[str, Any] = {}
        self.draw(Snapshot(problem=_("Connecting to mncd…")))

    def draw(self, snapshot: Snapshot) -> None:
        for old in self.groups:
            self.widget.remove(old)
        self.groups = []
        self.anchors = {}
        status = snapshot.status
        if status is None:
            card = group(_("My Number Card"))
            card.add(row(label_of(_("State:")), snapshot.problem))
            self._add(card)
            return
        self._add(self._card_group(status))
        for which in ("auth", "sign"):
            cert = status.certificate(which)
            if status.state == "reading" and cert.source == "cache":
                cert = cert._replace(source="reading")
            self._add(self._certificate_group(which, cert, status))
        self._add(self._pin_group(status, snapshot.pins))

    def _add(self, widget: Any) -> None:
        self.widget.add(widget)
        self.groups.append(widget)

    def _card_group(self, status: Status) -> Any:
        card = group(_("My Number Card"))
        card.add(row(label_of(_("State:")), state_text(status.state)))
        card.add(row(label_of(_("Reader:")), status.reader or _("(none)")))
        others = [name for name in status.readers if name != status.reader]
        if others:
            card.add(row(label_of(_("Readers:")), ", ".join(status.readers)))
        if status.card_id:
            card.add(row(label_of(_("Card:")), status.card_id))
        return card

    def _certificate_group(self, which: str, cert: CertificateStatus, status: Status) -> Any:
        box = group(certificate_title(which))
        self.anchors[which] = box
        step = next_step(which, cert)
        if not cert.present and cert.source == "none":
            box.add(row(label_of(_("State:")), _("not known yet")))
            box.add(row(label_of(_("Next step:")), step))
            return box
        if not cert.present:
            box.add(row(label_of(_("State:")), _("not on this card")))
            box.add(row(label_of(_("Why:")), step))
            return box
        box.add(row(label_of(_("State:")), certificate_state_text(cert.state) or _("unknown")))
        if cert.state != "invalidated":
            box.add(row(label_of(_("Expires:")), expires_text(cert)))
        if step:
            suffixes = []
            if cert.state in ("expiring", "expired"):
                suffixes.append(button(_("How to renew"), self.actions.renewal_info, style="flat"))
            box.add(row(label_of(_("Next step:")), step, *suffixes))
        box.add(row(label_of(_("Source:")), source_text(cert.source)))
        card_in = status.state == "card-present"
        title = certificate_title(which)
        actions = Gtk.Box(spacing=6)
        actions.append(
            button(_("Show"), lambda: self.actions.show_certificate(which),
                   name=_("Show the {title}").format(title=title))
        )  # fmt: skip
        actions.append(
            button(_("Export…"), lambda: self.actions.export_certificate(which),
                   name=_("Export the {title}").format(title=title))
        )  # fmt: skip
        actions.set_sensitive(card_in or which == "auth")
        box.set_header_suffix(actions)
        return box

    def _pin_group(self, status: Status, pins: PinStatus | None) -> Any:
        box = group(
            _("PINs"),
            _("Tries left, read from the card now without spending one.")
            if pins is not None
            else _("Tries left as last known; insert the card to read them."),
        )
        for which in PINS:
            counter = pins.counter(which) if pins is not None else None
            if counter is not None and not counter.present:
                continue
            if counter is not None:
                tries, maximum = counter.tries_left, counter.max_tries
            elif which == "card-info":
                continue  # only the card tells this one
            else:
                cert = status.certificate(which)
                tries, maximum = cert.pin_tries_left, MAX_PIN_TRIES[which]
            label = pin_label(which)
            change = button(
                _("Change…"),
                bind(self.actions.change_pin, which),
                name=_("Change the {label}").format(label=label),
            )
            change.set_sensitive(pins is not None and tries != 0)
            widget = row(capitalized(label), format_pin_tries(tries, maximum), change)
            self.anchors[f"pin-{which}"] = widget
            box.add(widget)
        return box


def expires_text(cert: CertificateStatus, now: dt.datetime | None = None) -> str:
    """``2029-05-31 (1234 days left)``: the expiry date in Japan, as mncctl status says it."""
    expires = format_date(cert.not_after, japan())
    if cert.days_left is None:
        return expires
    return _("{date} ({days})").format(date=expires, days=format_days_left(cert.days_left))


def bind(function: Callable[[str], Any], value: str) -> Callable[[], Any]:
    return lambda: function(value)


def focus(widget: Any) -> None:
    """Move the keyboard focus to ``widget`` (or its first focusable child)."""
    widget.grab_focus() or widget.child_focus(Gtk.DirectionType.TAB_FORWARD)
