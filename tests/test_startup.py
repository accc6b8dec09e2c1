"""Starting fast: mncctl loads only what its command needs, the daemon only what it needs to be
ready. Checked in a fresh interpreter, on the real stack for ``mncctl status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from busstack import daemon_on_private_bus
from test_daemon_dbus import wait_state

#: Heavy packages no ``mncctl status`` needs.
HEAVY = ("cryptography", "pyhanko", "smartcard", "pyudev", "mncd.documents.pdf")
#: What the daemon imports only after READY=1.
LATER = ("pyudev", "mncd.desktop.notifications", "mncd.desktop.alerts", "mncd.pkcs11.server")


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


def test_the_daemon_imports_later_work_only_after_it_is_ready():
    assert loaded_after("import mncd.daemon.main", LATER)["loaded"] == []
