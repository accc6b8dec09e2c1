"""``mncctl doctor`` against real components: a good stack (pcscd + vpcd + the card, the daemon
on a private bus, dunst, the installed user unit, a real pinentry), pcscd stopped, a pcscd with
no reader, and USB readers faked by umockdev that pcscd cannot drive.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from busstack import Daemon, PrivateBus, wait_for
from notifyserver import NotifyServer
from test_daemon_dbus import wait_state
from test_systemd_unit import _env, _install
from test_udev import UmockdevBed

from mncd.vcard.sandbox import PcscSandbox

MNCCTL = str(Path(sys.executable).with_name("mncctl"))
#: This installation's mncd as the doctor names it (quoted when the path needs it).
INSTALL = shlex.quote(str(Path(sys.executable).with_name("mncd")))
BUS_NAME = "io.github.mncd.MyNumberCard1"


def doctor(env: dict[str, str], *args: str, wrapper: list[str] | None = None):
    return subprocess.run(
        [*(wrapper or []), MNCCTL, "doctor", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def level(line: str) -> str:
    """A doctor line's level: ok, warn, FAIL or skip."""
    return line.split(" ", 1)[0]


def lines_by_check(output: str) -> dict[str, list[str]]:
    """The doctor's lines by the check's English name (``readers``, ``daemon``, ...)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        level, _, rest = line.partition(" ")
        name = rest.strip().split(": ")[0].split(" (")[0]
        if level in ("ok", "warn", "FAIL", "skip"):
            found.setdefault(name, []).append(line)
    return found


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """A user's environment: HOME with mncd installed by scripts/install-user-service, and
    pinentry-tty as the configured PIN dialog."""
    env = _env(tmp_path, LANGUAGE="")  # the tests set LANG: English unless they say otherwise
    config = tmp_path / "home" / ".config" / "mncd"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[pinentry]\nprogram = "pinentry-tty"\n')
    installed = _install(env)
    assert installed.returncode == 0, installed.stderr
    return env


@pytest.fixture
def private_sandbox() -> Iterator:
    """A factory of PC/SC sandboxes of the test's own (the session's stays untouched)."""
    made: list[PcscSandbox] = []

    def make(readers: bool = True) -> PcscSandbox:
        made.append(PcscSandbox(readers=readers).start())
        return made[-1]

    yield make
    for box in made:
        box.stop()


def test_a_good_stack_is_all_ok(tmp_path, sandbox, card, home):
    activation = Path(home["HOME"]) / ".local/share/dbus-1/services"
    (tmp_path / "bus").mkdir()
    bus = PrivateBus(tmp_path / "bus", service_dirs=[activation])
    daemon = Daemon(bus, sandbox.env, tmp_path / "state")
    (tmp_path / "dunst").mkdir()
    server = NotifyServer(tmp_path / "dunst", bus.address)
    try:
        daemon.start()
        server.start()
        wait_state(bus.address, "card-present")
        env = {**home, **sandbox.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        env.pop("DISPLAY", None)  # a text console: pinentry-tty is the right dialog there
        env.pop("WAYLAND_DISPLAY", None)
        result = doctor(env)
        assert result.returncode == 0, result.stdout + result.stderr
        # The PKCS#11 lines depend on the user's set-up: tests/test_browsers.py checks them.
        pkcs11 = {"PKCS#11 socket", "PKCS#11 module file", "dialog's display", "TLS 1.3 log-in"}
        checks = {k: v for k, v in lines_by_check(result.stdout).items() if k not in pkcs11}
        assert all(level(line) == "ok" for lines in checks.values() for line in lines), (
            result.stdout
        )
        assert set(checks) == {
            "pcscd", "readers", "USB readers", "card", "token", "daemon", "user unit",
            "notifications", "settings", "PIN dialog",
        }  # fmt: skip
        config = Path(home["HOME"]) / ".config/mncd/config.toml"
        assert f"{config}: every setting applies" in checks["settings"][0]
        assert "Virtual PCD 00 00, Virtual PCD 00 01" in checks["readers"][0]
        assert (
            f"a My Number Card in {card.reader} answers the JPKI application" in (checks["card"][0])
        )
        assert "running; it sees: a My Number Card" in checks["daemon"][0]
        unit = Path(home["HOME"]) / ".config/systemd/user/mncd.service"
        assert f"installed: {unit}" in checks["user unit"][0]
        assert "pinentry-tty (/usr/bin/pinentry-tty)" in checks["PIN dialog"][0]
        assert result.stdout.splitlines()[-1].startswith("Everything mncd needs works")
        # The daemon stopped: still fine, the bus starts it on the first call.
        daemon.stop()
        wait_for(lambda: "not running" in doctor(env).stdout, "the daemon to be gone")
        again = doctor(env, "--json")
        assert again.returncode == 0, again.stdout
        assert "it starts when first used (D-Bus activation)" in again.stdout
    finally:
        server.stop()
        daemon.stop()
        bus.stop()


def test_pcscd_stopped(tmp_path, private_sandbox, home):
    box = private_sandbox()
    box.pcscd("stop")
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, **box.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        result = doctor(env)
        english = json.loads(doctor(env, "--json").stdout)["findings"]
        japanese = json.loads(doctor({**env, "LANG": "ja_JP.UTF-8"}, "--json").stdout)["findings"]
    finally:
        bus.stop()
    assert result.returncode == 1
    checks = lines_by_check(result.stdout)
    assert level(checks["pcscd"][0]) == "FAIL"
    assert "not reachable: install and start it: sudo apt install pcscd" in checks["pcscd"][0]
    assert level(checks["readers"][0]) == "skip" and level(checks["card"][0]) == "skip"
    # Nothing owns or can start mncd on this bus: that is a problem too, with what to do: the
    # command as this installation has it (a checkout's .venv/bin/mncd, not on the PATH).
    assert f"run {INSTALL} --install-user-service" in checks["daemon"][0]
    assert result.stdout.splitlines()[-1].startswith("2 problem(s) to fix")
    assert "Traceback" not in result.stderr
    # The same findings in Japanese, level by level, in Japanese words.
    assert [(f["check"], f["level"]) for f in japanese] == [
        (f["check"], f["level"]) for f in english
    ]
    for finding in japanese:
        assert re.search("[\u3040-\u30ff\u4e00-\u9fff]", finding["text"]), finding
    daemon = next(f for f in japanese if f["check"] == "daemon")
    assert f"{INSTALL} --install-user-service を実行してください" in daemon["text"], daemon


def test_no_reader(tmp_path, private_sandbox, home):
    box = private_sandbox(readers=False)
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, **box.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        result = doctor(env)
    finally:
        bus.stop()
    assert result.returncode == 1
    checks = lines_by_check(result.stdout)
    assert level(checks["pcscd"][0]) == "ok"
    assert level(checks["readers"][0]) == "FAIL"
    assert "none: connect a reader" in checks["readers"][0]
    assert level(checks["card"][0]) == "skip"


@pytest.fixture
def bed():
    testbed = UmockdevBed()
    yield testbed
    testbed.close()


def test_a_reader_pcscd_cannot_drive_is_named_with_what_to_do(tmp_path, private_sandbox, home,
                                                              bed):  # fmt: skip
    box = private_sandbox(readers=False)
    bed.cmd("add-rcs380")
    bed.cmd("add-keyboard")
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, **box.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8",
               "UMOCKDEV_DIR": bed.root}  # fmt: skip
        result = doctor(env, wrapper=["umockdev-wrapper"])
        ccid = bed.cmd("add-ccid Test CCID Reader")
        with_ccid = doctor(env, wrapper=["umockdev-wrapper"])
        bed.cmd(f"remove {ccid}")
    finally:
        bus.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    usb = lines_by_check(result.stdout)["USB readers"]
    assert len(usb) == 1, usb  # the keyboard is no reader
    assert level(usb[0]) == "FAIL" and "RC-S380 is plugged in but is not a CCID reader" in usb[0]
    assert "use a CCID reader instead, such as Sony's RC-S300" in usb[0]
    # A CCID reader pcscd does not list: its driver is what to install.
    readers = lines_by_check(with_ccid.stdout)["readers"][0]
    assert "udev sees Test CCID Reader: install pcscd's CCID driver" in readers
    assert "sudo apt install libccid" in readers
    assert "Traceback" not in result.stderr + with_ccid.stderr


def test_a_card_that_is_not_a_my_number_card(tmp_path, sandbox, insert_card, home):
    insert_card(jpki=False)
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, **sandbox.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        result = doctor(env, "--json")
    finally:
        bus.stop()
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    card = next(f for f in report["findings"] if f["check"] == "card")
    assert card["level"] == "fail" and "it is not a My Number Card" in card["text"]


def test_settings_problems_are_listed_with_the_file(tmp_path, sandbox, home):
    config = Path(home["HOME"]) / ".config" / "mncd" / "config.toml"
    config.write_text('[pinentry]\nprogram = "pinentry-tty"\ncolour = "red"\n'
                      "[notifications]\nthresholds = []\n")  # fmt: skip
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, **sandbox.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        result = doctor(env)
        (line,) = lines_by_check(result.stdout)["settings"]
        assert level(line) == "warn"
        assert f"{config}: unknown setting pinentry.colour ignored; " in line
        assert (
            "notifications.thresholds must be a list of days (1 to 3650); using [30, 7, 1]" in line
        )
        # The good key still applies; the problems are said once, not also as log lines.
        assert (
            "pinentry-tty (/usr/bin/pinentry-tty)" in lines_by_check(result.stdout)["PIN dialog"][0]
        )
        assert "pinentry.colour" not in result.stderr
        config.unlink()
        (line,) = lines_by_check(doctor(env).stdout)["settings"]
        assert level(line) == "ok" and f"no settings file ({config})" in line
    finally:
        bus.stop()


def test_activation_is_told_as_the_bus_and_the_files_have_it(tmp_path, sandbox, card, home):
    """mncd running on a bus that cannot start it (no activation file there): a warning with
    what to run; the user unit's line says whether the activation file is there."""
    (tmp_path / "bus").mkdir()
    bus = PrivateBus(tmp_path / "bus")  # the user's activation file is not in its search path
    daemon = Daemon(bus, sandbox.env, tmp_path / "state")
    try:
        daemon.start()
        wait_state(bus.address, "card-present")
        env = {**home, **sandbox.env, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8"}
        checks = lines_by_check(doctor(env).stdout)
        assert level(checks["daemon"][0]) == "warn", checks["daemon"]
        assert (
            "running, but nothing starts it on demand (no D-Bus activation file): run "
            f"{INSTALL} --install-user-service" in checks["daemon"][0]
        )
        home_dir = Path(home["HOME"])
        (home_dir / ".config/systemd/user/mncd.service").unlink()
        checks = lines_by_check(doctor(env).stdout)
        assert (
            "mncd still starts on demand through its D-Bus activation file"
            in (checks["user unit"][0])
        )
        (home_dir / ".local/share/dbus-1/services" / f"{BUS_NAME}.service").unlink()
        env["XDG_DATA_DIRS"] = str(tmp_path / "no-system-files")
        checks = lines_by_check(doctor(env).stdout)
        assert (
            "not installed, nor is the D-Bus activation file: nothing starts mncd"
            in (checks["user unit"][0])
        )
    finally:
        daemon.stop()
        bus.stop()


def test_a_terminal_only_pinentry_is_told_in_a_desktop_session(tmp_path, home):
    """Debian's ``pinentry`` pointing at pinentry-tty (as the alternatives link would) asks
    only on a terminal: fine on a console, a warning with what to install in a desktop."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/usr/bin/pinentry-tty", bin_dir / "pinentry")
    config = Path(home["HOME"]) / ".config" / "mncd" / "config.toml"
    config.write_text('[pinentry]\nprogram = "pinentry"\n')
    bus = PrivateBus(tmp_path)
    try:
        env = {**home, "DBUS_SESSION_BUS_ADDRESS": bus.address, "LANG": "C.UTF-8",
               "PATH": f"{bin_dir}:{os.environ['PATH']}"}  # fmt: skip
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        console = lines_by_check(doctor(env).stdout)["PIN dialog"][0]
        desktop = doctor({**env, "DISPLAY": ":99"})
        japanese = doctor({**env, "DISPLAY": ":99", "LANG": "ja_JP.UTF-8"}, "--json")
    finally:
        bus.stop()
    assert level(console) == "ok" and "asks on the terminal (no desktop session here)" in console
    line = lines_by_check(desktop.stdout)["PIN dialog"][0]
    assert level(line) == "warn", line
    assert "pinentry → /usr/bin/pinentry-tty" in line and "asks only on a terminal" in line
    assert "sudo apt install pinentry-gnome3" in line
    finding = next(f for f in json.loads(japanese.stdout)["findings"] if f["check"] == "pinentry")
    assert finding["level"] == "warn" and "端末" in finding["text"], finding
    # A pinentry that shows a window (stand-in named as Debian names it) is fine in a desktop.
    window = bin_dir / "pinentry-gnome3"
    window.write_text("#!/bin/sh\nexit 0\n")
    window.chmod(0o755)
    config.write_text('[pinentry]\nprogram = "pinentry-gnome3"\n')
    bus = PrivateBus(tmp_path)
    try:
        env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
        line = lines_by_check(doctor({**env, "DISPLAY": ":99"}).stdout)["PIN dialog"][0]
    finally:
        bus.stop()
    assert level(line) == "ok" and f"pinentry-gnome3 ({window})" in line
