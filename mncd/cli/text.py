"""mncctl's words: every line it prints goes through gettext (English msgids, the Japanese
catalog in ``mncd/locale``), chosen by the user's locale (LANGUAGE, LC_ALL, LC_MESSAGES, LANG)."""

from __future__ import annotations

import argparse
import gettext
import os
import re
import sys
import unicodedata
from typing import Any

from mncd.i18n import DOMAIN, LOCALE_DIR
from mncd.i18n import N_ as N_  # mncctl's words: these three, and the helpers below
from mncd.i18n import gettext as _
from mncd.i18n import ngettext as ngettext


def use_catalog_for_argparse() -> None:
    """argparse's own words (usage, options, its errors) from mncd's catalog too."""
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)


def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size()`` gives it (``$COLUMNS`` first, 80
    when unknown), without importing shutil: it loads the compression modules with it."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide and full-width characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


#: What must not start a line in Japanese: closing punctuation, the prolonged sound mark, small
#: kana (kinsoku).
_NO_LINE_START = "、。，．・：；？！）」』】〕ー々ぁぃぅぇぉっゃゅょァィゥェォッャュョ"
#: What must not end a line: opening brackets.
_NO_LINE_END = "「『（【〔"
#: Wide characters: Japanese (and other East Asian) scripts, full-width forms.
_WIDE = "\u2e80-\ua4cf\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
#: Pieces a line may break between: runs of spaces, words of narrow characters, and single wide
#: characters (Japanese has no spaces), each with the brackets and punctuation that must stay
#: with it.
_PIECES = rf"\s+|[{_NO_LINE_END}]*(?:[^\s{_WIDE}]+|.)[{_NO_LINE_START}]*"


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` terminal columns, broken at spaces and between
    Japanese characters (never before 、。 or after 「 and the like), inside a word only when
    it is wider than a line (a fingerprint)."""
    lines: list[str] = []
    line = ""
    for piece in re.findall(_PIECES, text):  # compiled on first use (help only), then cached
        if piece.isspace():
            line += " " if line else ""
            continue
        if line and display_width(line + piece) > width:
            lines.append(line.rstrip())
            line = ""
        while display_width(piece) > width > 1:
            cut = next(i for i in range(len(piece), 0, -1) if display_width(piece[:i]) <= width)
            lines.append(piece[:cut])
            piece = piece[cut:]
        line += piece
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return lines


def output_width() -> int | None:
    """The width to wrap mncctl's output to: the terminal's when standard output is one (or
    ``$COLUMNS`` is set), None (no wrapping) when it goes to a file or a pipe."""
    if os.environ.get("COLUMNS", "").isdigit():
        return terminal_columns()
    try:
        return terminal_columns() if sys.stdout.isatty() else None
    except (AttributeError, ValueError):
        return None


def hanging(head: str, text: str, width: int | None) -> str:
    """``head`` then ``text``, wrapped to ``width`` columns with the lines after the first
    starting under the text's first column (unwrapped when ``width`` is None or too narrow)."""
    indent = display_width(head)
    if width is None or width - indent < 20:
        return head + text
    lines = wrap(text, width - indent)
    return "\n".join([head + lines[0], *(" " * indent + line for line in lines[1:])])


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, told the terminal's width (argparse would look it up through
    shutil); descriptions wrapped line by line, indented lines (examples) kept as written."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
        width: int | None = None,
    ) -> None:  # fmt: skip
        width = terminal_columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)

    # argparse's hooks for laying out descriptions and epilogs, and the help of options.
    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for line in text.splitlines():
            if not line or line.startswith(" "):
                out.append(indent + line)
            else:
                out += [indent + part for part in wrap(line, width - len(indent))]
        return "\n".join(out)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return wrap(text, width)


class ArgumentParser(argparse.ArgumentParser):
    """mncctl's parsers (subcommands inherit the class): formatters that find the width
    without shutil."""

    def __init__(self, *args: Any, formatter_class: Any = HelpFormatter, **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


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
