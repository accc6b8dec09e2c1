"""``scripts/setup``: what it installs for running mncd, what ``--dev`` adds for the tests, and
the install without a compiler (Debian's pyscard and systemd-python seen by the venv, every other
package a binary wheel). The suite's own .venv was made by that route (``./scripts/test`` runs
``./scripts/setup --dev``), so its checks here are of the route as it ran."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup"
#: Build tools, headers and what only the tests use: none of them is needed to run mncd.
NOT_FOR_RUNNING = {"gcc", "swig", "pkg-config", "libpcsclite-dev", "libsystemd-dev",
                   "python3-dev", "vsmartcard-vpcd", "dunst", "xvfb", "tmux", "umockdev",
                   "pinentry-tty", "opensc", "gettext"}  # fmt: skip


def array(name: str) -> set[str]:
    """The packages of the bash array ``name`` in scripts/setup (comments dropped)."""
    text = SETUP.read_text(encoding="utf-8")
    body = re.search(rf"^{name}=\((.*?)^\)", text, re.S | re.M)
    assert body is not None, name
    return {word for line in body.group(1).splitlines() for word in line.split("#")[0].split()}


def test_setup_installs_only_what_mncd_needs_to_run():
    runtime, dev = array("runtime_packages"), array("dev_packages")
    assert {"pcscd", "libccid", "python3-pyscard", "python3-systemd", "python3-venv"} <= runtime
    # The window is for everyone: Debian's PyGObject, GTK 4 and libadwaita, nothing to build.
    assert {"python3-gi", "python3-cairo", "gir1.2-gtk-4.0", "gir1.2-adw-1"} <= runtime
    assert not runtime & NOT_FOR_RUNNING, runtime & NOT_FOR_RUNNING
    assert {"vsmartcard-vpcd", "dunst", "tmux", "umockdev", "pinentry-tty"} <= dev
    assert not {"gcc", "swig", "python3-dev"} & (runtime | dev)  # no compiler at all


def test_the_test_command_sets_up_the_dev_tools():
    assert "./scripts/setup --dev\n" in (ROOT / "scripts" / "test").read_text()
    assert "./scripts/setup\n" in (ROOT / "scripts" / "demo").read_text()
    bad = subprocess.run([str(SETUP), "--bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "usage: scripts/setup [--dev]" in bad.stderr


def test_the_venv_sees_debians_pyscard_and_systemd_and_no_compiler_was_needed():
    config = (ROOT / ".venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in config
    assert re.search(r"^executable = /usr/bin/python3", config, re.M), config
    where = subprocess.run(
        [sys.executable, "-c", "import smartcard, systemd.journal; "
         "print(smartcard.__file__); print(systemd.journal.__file__)"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith("/usr/lib/python3/dist-packages/") for path in where), where
    assert "--only-binary=:all:" in SETUP.read_text()  # pip may not build anything from source
