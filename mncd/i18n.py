"""Translations: gettext catalogs shipped in ``mncd/locale`` (Japanese; English is the source)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gettext

DOMAIN = "mncd"
LOCALE_DIR = Path(__file__).parent / "locale"
#: The environment variables gettext chooses the language from, in its order.
LANGUAGE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

#: Catalogs already looked up: gettext searches the file system on every call otherwise.
_catalogs: dict[tuple[str, ...], gettext.NullTranslations] = {}


def translator(languages: list[str] | None = None) -> gettext.NullTranslations:
    """The catalog for ``languages`` or, by default, the locale of the environment
    (LANGUAGE, LC_ALL, LC_MESSAGES, LANG); English when none matches."""
    if languages is None:
        key = ("environment", *(os.environ.get(name, "") for name in LANGUAGE_VARIABLES))
    else:
        key = ("languages", *languages)
    catalog = _catalogs.get(key)
    if catalog is None:
        import gettext  # with the first text (the daemon is ready before)

        catalog = gettext.translation(DOMAIN, LOCALE_DIR, languages=languages, fallback=True)
        _catalogs[key] = catalog
    return catalog


def gettext(message: str) -> str:
    """``message`` in the user's language (the environment's locale at this moment)."""
    return translator().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n``, in the user's language."""
    return translator().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks ``message`` for the catalog; it is translated where it is used."""
    return message
