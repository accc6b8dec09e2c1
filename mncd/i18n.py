"""Translations: gettext catalogs shipped in ``mncd/locale`` (Japanese; English is the source)."""

from __future__ import annotations

import gettext
from pathlib import Path

DOMAIN = "mncd"
LOCALE_DIR = Path(__file__).parent / "locale"


def translator(languages: list[str] | None = None) -> gettext.NullTranslations:
    """The catalog for ``languages`` or, by default, the locale of the environment
    (LANGUAGE, LC_ALL, LC_MESSAGES, LANG); English when none matches."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=languages, fallback=True)
