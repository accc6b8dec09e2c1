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
PACKAGES = {"cli": 150, "documents": 50, "desktop": 50, "client": 20, "window": 40, "daemon": 10}


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


# -- the glossary in the catalog's header comments ------------------------------------------


def translations() -> list[tuple[str, str]]:
    """Every (msgid, translation) of the catalog."""
    catalog = entries(PO.read_text(encoding="utf-8"))
    return [(msgid, text) for msgid, texts in catalog.items() for text in texts]


def test_japanese_texts_use_full_width_brackets():
    """ASCII brackets only in argparse's ``%(name)s`` fields and the dialog's mnemonics."""
    for msgid, text in translations():
        rest = re.sub(r"%\(\w+\)|\(_[A-Z]\)", "", text)
        assert "(" not in rest and ")" not in rest, (msgid, text)


def test_japanese_texts_say_card_reader_and_subject_as_the_glossary_does():
    for msgid, text in translations():
        assert not re.search(r"(?<!カード)(?<!接触型)(?<!NFC)リーダー", text), (msgid, text)
        assert "主体者" not in text, (msgid, text)


def test_the_glossary_is_in_the_catalogs_header():
    header = PO.read_text(encoding="utf-8").split('msgid ""', 1)[0]
    for term in ("Glossary", "カードリーダー", "発行先", "（）", "help text", "「引数」"):
        assert term in header, term


def parser_actions_without_help() -> list[str]:
    """Every subcommand and option of mncctl that ``--help`` would list without a text."""
    import argparse

    from mncd.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    missing += [f"{path} {name}"] * (name not in helped)
                    missing += walk(sub, f"{path} {name}")
            elif action.help is None:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return missing

    return walk(build_parser(), "mncctl")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_every_subcommand_and_option_has_a_help_text(monkeypatch, language):
    monkeypatch.setenv("LANGUAGE", language)
    assert parser_actions_without_help() == []


def test_a_parser_error_in_japanese_names_the_argument_as_help_does(capsys, monkeypatch):
    from mncd.cli.main import main

    monkeypatch.setenv("LANGUAGE", "ja")
    assert main(["pin", "change", "foo"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("mncctl pin change: エラー: 種類: 選べない値です: 'foo'"), error
    assert "引数" not in error and "which" not in error
