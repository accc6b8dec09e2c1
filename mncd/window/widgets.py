"""Small GTK helpers: every control gets an accessible name, rows say title and value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gi.repository import Adw, Gtk


def named(widget: Any, name: str, description: str = "") -> Any:
    """``widget`` with the accessible name ``name`` (and ``description``), as screen readers and
    AT-SPI clients read it; ``name`` is also its tooltip when it shows no text of its own."""
    properties = [Gtk.AccessibleProperty.LABEL]
    values = [name]
    if description:
        properties.append(Gtk.AccessibleProperty.DESCRIPTION)
        values.append(description)
    widget.update_property(properties, values)
    # Adw's rows name themselves after their title label too: the name is ours alone.
    widget.reset_relation(Gtk.AccessibleRelation.LABELLED_BY)
    return widget


def button(label: str, on_click: Callable[[], Any], *, name: str = "", style: str = "") -> Any:
    """A button showing ``label`` (accessible name ``name`` or ``label``)."""
    widget = Gtk.Button(label=label, valign=Gtk.Align.CENTER, use_underline=False)
    if style:
        widget.add_css_class(style)
    widget.connect("clicked", lambda _button: on_click())
    return named(widget, name or label)


def row(title: str, value: str, *suffixes: Any) -> Any:
    """An ``Adw.ActionRow`` with ``title`` and ``value`` (wrapped, selectable by screen
    readers as the row's name ``title: value``)."""
    widget = Adw.ActionRow(title=title, subtitle=value, title_lines=0, subtitle_lines=0)
    widget.set_use_markup(False)
    for suffix in suffixes:
        widget.add_suffix(suffix)
    return named(widget, f"{title}: {value}" if value else title)


def label_of(text: str) -> str:
    """mncctl's table label (``State:``) as a row title (``State``), in either language."""
    return text.rstrip(":：").strip()


def group(title: str, description: str = "") -> Any:
    widget = Adw.PreferencesGroup(title=title)
    if description:
        widget.set_description(description)
    return widget
