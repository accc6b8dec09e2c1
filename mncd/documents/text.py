"""Words of signed documents for people (errors, warnings, verification reports): gettext with
English msgids and the Japanese catalog in ``mncd/locale``, in the locale of the user's process
(LANGUAGE, LC_ALL, LC_MESSAGES, LANG) at the time each text is made."""

from __future__ import annotations

import datetime as dt

from mncd.i18n import N_ as N_
from mncd.i18n import gettext as _
from mncd.i18n import ngettext as ngettext
from mncd.jpki import calendar


def japan_date(moment: dt.datetime) -> str:
    """The day of ``moment`` in Japan, as the user's language writes a date."""
    day = calendar.japan_date(moment)
    return _("{year}-{month:02d}-{day:02d}").format(year=day.year, month=day.month, day=day.day)
