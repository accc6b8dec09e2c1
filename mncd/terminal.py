"""Text on a terminal, for mncctl and mncd alike: the width it takes (Japanese characters take
two columns), wrapping at spaces and between Japanese characters, hanging indents, and argparse's
help laid out that way."""

from __future__ import annotations

import argparse
import os
import re
import sys
import unicodedata
from typing import Any


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
