"""Every text mncctl prints, the signed-document texts it passes on and the desktop's notices and
prompts have a Japanese translation in the catalog (and the catalog builds)."""

from __future__ import annotations

import ast
import re
import string
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "mncd" / "locale" / "ja" / "LC_MESSAGES" / "mncd.po"
#: Kana and kanji.
JAPANESE = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")


def entries(text: str) -> dict[str, list[str]]:
    """msgid → its msgstr (or msgstr[n]) texts, from a .po or .pot file."""
    found: dict[str, list[str]] = {}
    msgid: str | None = None
    current: list[str] | None = None
    strings: list[str] = []
    for line in [*text.splitlines(), ""]:
        line = line.strip()
        if line.startswith('"') and current is not None:
            current[-1] += ast.literal_eval(line)
            continue
        if line.startswith("msgid "):
            if msgid is not None:
                found[msgid[0]] = strings
            msgid, strings = [ast.literal_eval(line[6:])], []
            current = msgid
        elif line.startswith("msgid_plural "):
            current = [ast.literal_eval(line[13:])]
        elif line.startswith("msgstr"):
            strings.append(ast.literal_eval(line.split(" ", 1)[1]))
            current = strings
        elif not line or line.startswith("#"):
            current = None if not line else current
    if msgid is not None:
        found[msgid[0]] = strings
    found.pop("", None)
    return found


#: The packages whose texts people read, and how many texts each has at least (so that an
#: extraction that silently finds nothing fails).
PACKAGES = {"cli": 150, "documents": 50, "desktop": 50, "client": 20, "window": 40}


def msgids(tmp_path: Path, package: str) -> dict[str, list[str]]:
    """The msgids used in ``mncd/<package>/*.py`` (``_``, ``N_``, ``gettext``, ``ngettext``)."""
    pot = tmp_path / f"{package}.pot"
    sources = sorted(str(p) for p in (ROOT / "mncd" / package).glob("*.py"))
    subprocess.run(
        ["xgettext", "-L", "Python", "-k_", "-kN_", "-kgettext", "-kngettext:1,2",
         "--from-code=UTF-8", "--no-location", "-o", str(pot), *sources],
        check=True,
    )  # fmt: skip
    return entries(pot.read_text(encoding="utf-8"))


def all_msgids(tmp_path: Path) -> dict[str, list[str]]:
    return {k: v for package in PACKAGES for k, v in msgids(tmp_path, package).items()}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_text_has_a_japanese_translation(tmp_path, package):
    used = msgids(tmp_path, package)
    catalog = entries(PO.read_text(encoding="utf-8"))
    assert len(used) > PACKAGES[package]  # the extraction found the package's texts
    missing = sorted(msgid for msgid in used if not any(catalog.get(msgid, [])))
    assert missing == []


def test_signed_document_texts_are_one_language_each(tmp_path):
    """No "English (日本語)" mixtures left: an English msgid, a Japanese translation."""
    used = msgids(tmp_path, "documents")
    catalog = entries(PO.read_text(encoding="utf-8"))
    for msgid in used:
        assert not JAPANESE.search(msgid), msgid
        for translated in catalog[msgid]:
            assert JAPANESE.search(translated), (msgid, translated)


def placeholders(text: str) -> set[str]:
    """The names of the ``{name}`` fields of a format string (without conversions and specs)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_translations_keep_every_placeholder(tmp_path):
    used = all_msgids(tmp_path)
    catalog = entries(PO.read_text(encoding="utf-8"))
    for msgid in used:
        for translated in catalog.get(msgid, []):
            for name in placeholders(msgid):
                assert name in placeholders(translated), (msgid, translated)


def test_catalog_compiles_as_committed(tmp_path):
    compiled = tmp_path / "mncd.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(PO)], check=True)
    assert compiled.read_bytes() == PO.with_suffix(".mo").read_bytes()
