"""The packages depend one way, as pyproject.toml's import-linter contracts state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the ``mncd`` package under ``root``, with ``root``'s contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_the_package_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_import_from_the_core_into_a_front_door_breaks_a_contract(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "mncd", copy / "mncd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    events = copy / "mncd" / "core" / "events.py"
    events.write_text(events.read_text() + "\nfrom mncd.pkcs11 import server  # noqa\n")
    try:
        result = lint_imports(copy)
    finally:
        shutil.rmtree(copy)  # the sources name PIN options: no copy stays for the secrets scan
    assert result.returncode != 0
    assert "mncd.core.events -> mncd.pkcs11.server" in result.stdout
    assert "1 broken" in result.stdout


def readme_layout() -> str:
    """The tree in docs/layout.md (the README links to it)."""
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    section = text.split("# Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_the_readme_layout_names_every_package_and_only_modules_that_exist():
    import re

    listed: dict[str, set[str]] = {}
    package = ""
    for line in readme_layout().splitlines():
        top = re.match(r"(mncd/[\w.]+/?)", line)
        if top:
            package = top.group(1) if top.group(1).endswith("/") else ""
            if not package:
                assert (ROOT / top.group(1)).exists(), top.group(1)
            listed.setdefault(package, set())
            line = line[top.end() :]
        elif not line.startswith(" "):
            package = ""
        if package:
            listed[package] |= set(re.findall(r"\b(\w+\.py)\b", line))
    packages = {
        f"mncd/{path.name}/"
        for path in (ROOT / "mncd").iterdir()
        if (path / "__init__.py").exists()
    }
    assert packages <= listed.keys(), packages - listed.keys()
    for name, modules in listed.items():
        if name:
            missing = {m for m in modules if not (ROOT / name / m).exists()}
            assert not missing, f"{name}: {missing}"
