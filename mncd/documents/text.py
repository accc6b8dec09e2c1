"""Words of signed documents for people (errors, warnings, verification reports): gettext with
English msgids and the Japanese catalog in ``mncd/locale``, in the locale of the user's process
(LANGUAGE, LC_ALL, LC_MESSAGES, LANG) at the time each text is made."""

from __future__ import annotations

import datetime as dt

from mncd.i18n import translator
from mncd.jpki import calendar


def _(message: str) -> str:
    """``message`` in the user's language."""
    return translator().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n``, in the user's language."""
    return translator().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks ``message`` for the catalog; it is translated where it is used."""
    return message


def japan_date(moment: dt.datetime) -> str:
    """The day of ``moment`` in Japan, as the user's language writes a date."""
    day = calendar.japan_date(moment)
    return _("{year}-{month:02d}-{day:02d}").format(year=day.year, month=day.month, day=day.day)
