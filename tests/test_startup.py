"""Starting fast: mncctl loads only what its command needs, the daemon only what it needs to be
ready. Checked in a fresh interpreter, on the real stack for ``mncctl status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from busstack import daemon_on_private_bus
from test_daemon_dbus import wait_state

from mncd.cli.text import display_width

#: Heavy packages no ``mncctl status`` needs.
HEAVY = ("cryptography", "pyhanko", "smartcard", "pyudev", "mncd.documents.pdf")
#: What the daemon imports only after READY=1.
LATER = ("pyudev", "mncd.desktop.notifications", "mncd.desktop.alerts", "mncd.pkcs11.server")
#: What the daemon loads on first use, after READY=1: the X.509 layer (cryptography), the PIN
#: dialogs and the pinentry client, the caller lookup, the settings, the tz database, argparse.
BEFORE_READY_NOT_NEEDED = (
    "cryptography", "mncd.jpki.certificates", "mncd.desktop.prompts", "mncd.desktop.pinentry",
    "mncd.core.callers", "mncd.config", "tomllib", "zoneinfo", "argparse", "tempfile",
)  # fmt: skip


def loaded_after(code: str, names: tuple[str, ...], env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; which of ``names`` it imported, and its output."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"print(json.dumps([n for n in {list(names)!r} if n in sys.modules]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})  # fmt: skip
    return {"loaded": json.loads(done.stderr.strip().splitlines()[-1]), "stdout": done.stdout}


def test_mncctl_status_loads_no_crypto_pyhanko_or_pcsc(tmp_path, sandbox, card):
    with daemon_on_private_bus(tmp_path, {**sandbox.env, "LANG": "C.UTF-8"}) as daemon:
        wait_state(daemon.bus.address, "card-present")
        run = loaded_after(
            "from mncd.cli.main import main\nmain(['status', '--json'])",
            HEAVY,
            {"DBUS_SESSION_BUS_ADDRESS": daemon.bus.address},
        )
    assert json.loads(run["stdout"])["state"] == "card-present"
    assert run["loaded"] == []


def test_mncctl_help_still_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "mncd.cli.main", "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0
    for command in ("status", "sign", "verify", "auth", "pin", "cert", "check", "doctor",
                    "watch", "forget", "pkcs11"):  # fmt: skip
        assert f"    {command} " in done.stdout or f"    {command}\n" in done.stdout, command


def test_the_daemon_loads_later_work_only_after_it_is_ready(tmp_path, sandbox, card):
    """What the daemon imported before it said it was ready, read from ``-X importtime`` in its
    log up to its "ready" line, and what it knew by then; the card read after it needs the X.509
    layer."""
    env = {**sandbox.env, "PYTHONPROFILEIMPORTTIME": "1"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        log = daemon.log
    before, ready, after = log.partition("ready on the session bus")
    assert ready, log[-2000:]
    # The card in the reader was known before the name was taken: no first answer is a guess.
    states = [line.rsplit("state: ", 1)[1] for line in before.splitlines() if "state: " in line]
    assert states[-1:] in (["reading"], ["card-present"]), states
    # argparse: the tests start mncd with --verbose. What the interpreter itself loads before
    # any of mncd (site's .pth files: Debian's Python loads tempfile there) is not mncd's doing.
    loaded_by_mncd = imported(before) - interpreter_start(env)
    assert loaded_by_mncd & {*LATER, *BEFORE_READY_NOT_NEEDED} == {"argparse"}
    assert {"pyudev", "cryptography", "mncd.jpki.certificates"} <= imported(after)


def interpreter_start(env: dict[str, str]) -> set[str]:
    """What this interpreter imports on its own, before running any code."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    return imported(done.stderr)


def imported(log: str) -> set[str]:
    """Modules named by ``-X importtime`` lines in ``log``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_the_daemon_without_arguments_has_the_parsers_defaults():
    from mncd.daemon.main import NO_ARGUMENTS, parse_arguments, parser

    assert vars(parse_arguments([])) == vars(parser().parse_args([])) == NO_ARGUMENTS
    assert parse_arguments(["--verbose"]).verbose is True


def test_mncctl_version_loads_no_command():
    from mncd.cli.main import COMMANDS

    modules = tuple(f"mncd.cli.{module}" for module in COMMANDS.values())
    run = loaded_after("from mncd.cli.main import main\nmain(['--version'])", modules)
    assert run["stdout"].startswith("mncctl ")
    assert run["loaded"] == []


@pytest.mark.parametrize("lang", ["C.UTF-8", "ja_JP.UTF-8"])
def test_mncctl_help_fits_the_terminal_width(lang):
    """Descriptions and option help wrap to $COLUMNS (Japanese between characters, by display
    width); examples stay as written."""
    done = subprocess.run([sys.executable, "-m", "mncd.cli.main", "sign", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "60", "LANG": lang})  # fmt: skip
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    examples = [line for line in lines if line.startswith("  ") and "mncctl " in line]
    widths = [display_width(line) for line in lines if line not in examples]
    assert examples and max(widths) <= 58  # argparse keeps two columns free
    assert max(widths) > 50  # wrapped to the width, not narrower
