"""Every text mncctl prints has a Japanese translation in the catalog (and the catalog builds)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "mncd" / "locale" / "ja" / "LC_MESSAGES" / "mncd.po"


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


def cli_msgids(tmp_path: Path) -> dict[str, list[str]]:
    pot = tmp_path / "mncctl.pot"
    sources = sorted(str(p) for p in (ROOT / "mncd" / "cli").glob("*.py"))
    subprocess.run(
        ["xgettext", "-L", "Python", "-k_", "-kN_", "-kngettext:1,2", "--from-code=UTF-8",
         "--no-location", "-o", str(pot), *sources],
        check=True,
    )  # fmt: skip
    return entries(pot.read_text(encoding="utf-8"))


def test_every_mncctl_text_has_a_japanese_translation(tmp_path):
    used = cli_msgids(tmp_path)
    catalog = entries(PO.read_text(encoding="utf-8"))
    assert len(used) > 150  # the extraction found mncctl's texts
    missing = sorted(msgid for msgid in used if not any(catalog.get(msgid, [])))
    assert missing == []


def test_translations_keep_every_placeholder(tmp_path):
    used = cli_msgids(tmp_path)
    catalog = entries(PO.read_text(encoding="utf-8"))
    for msgid in used:
        for translated in catalog.get(msgid, []):
            for name in {part.split("}")[0] for part in msgid.split("{")[1:]}:
                assert "{" + name + "}" in translated, (msgid, translated)


def test_catalog_compiles_as_committed(tmp_path):
    compiled = tmp_path / "mncd.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(PO)], check=True)
    assert compiled.read_bytes() == PO.with_suffix(".mo").read_bytes()
