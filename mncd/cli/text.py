"""mncctl's words: every line it prints goes through gettext (English msgids, the Japanese
catalog in ``mncd/locale``), chosen by the user's locale (LANGUAGE, LC_ALL, LC_MESSAGES, LANG)."""

from __future__ import annotations

import gettext
from typing import Any

from mncd.i18n import DOMAIN, LOCALE_DIR
from mncd.i18n import N_ as N_  # mncctl's words: these three, and the helpers below
from mncd.i18n import gettext as _
from mncd.i18n import ngettext as ngettext
from mncd.terminal import ArgumentParser as ArgumentParser  # mncctl's parsers, and these:
from mncd.terminal import HelpFormatter as HelpFormatter
from mncd.terminal import display_width as display_width
from mncd.terminal import hanging as hanging
from mncd.terminal import output_width as output_width
from mncd.terminal import terminal_columns as terminal_columns
from mncd.terminal import wrap as wrap


def use_catalog_for_argparse() -> None:
    """argparse's own words (usage, options, its errors) from mncd's catalog too."""
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)


def pin_label(which: str) -> str:
    """``user-authentication PIN``, ``signing password`` or ``card-info PIN`` (暗証番号 for
    the 4-digit PINs, パスワード for the signing password), as the PIN dialogs say."""
    return {
        "auth": _("user-authentication PIN"),
        "sign": _("signing password"),
        "card-info": _("card-info PIN"),
    }[which]


def pin_rule(which: str) -> str:
    """What the PIN looks like, as the PIN dialogs say."""
    if which == "sign":
        return _("6 to 16 characters: capital letters A-Z and digits 0-9, both used")
    return _("{n} digits").format(n=4)


def capitalized(text: str) -> str:
    """``text`` starting a sentence (English; Japanese has no capitals)."""
    return text[:1].upper() + text[1:]


def examples(*lines: str) -> str:
    """The epilog of a subcommand: its examples, one a line."""
    return _("examples:") + "".join(f"\n  {line}" for line in lines)


def subcommand(sub: Any, name: str, help: str, description: str, *lines: str) -> Any:
    """A subcommand with a one-line help, a description and examples."""
    return sub.add_parser(
        name, help=help, description=description, epilog=examples(*lines) if lines else None,
    )  # fmt: skip


class Texts(dict):  # type: ignore[type-arg]
    """A table of msgids (marked with :func:`N_`) that reads back translated."""

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, dict):
            return Texts(value)
        return _(value) if isinstance(value, str) else value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (translated)
