"""mncd under a real ``systemd --user`` manager (tests/usermanager.py), installed as a user
installs it (``mncd --install-user-service``), with the virtual card in the test's pcscd.

Everything the user does runs as the test user in the manager's namespace: ``systemctl --user``,
``journalctl --user``, ``busctl --user`` and ``gdbus`` on the session bus the manager started.
"""

from __future__ import annotations

import configparser
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busstack import (
    BUS_NAME,
    OBJECT_PATH,
    CallError,
    gvariant_bytes,
    parse_gvariant_arrays,
    wait_for,
)
from busstack import unwrap as unwrap_json
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from usermanager import UserManager, UserManagerError, cgroup_hierarchies

REPO = Path(__file__).resolve().parents[1]
#: The mncd command of this installation (the venv's entry point), as a user would run it.
MNCD = Path(sys.executable).with_name("mncd")
UNIT = "mncd.service"
ERR = "io.github.mncd.MyNumberCard1.Error."
#: Settings of the shipped unit that are not hardening.
NOT_HARDENING = {
    "Type", "NotifyAccess", "BusName", "ExecStart", "Restart", "RestartSec", "WatchdogSec",
    "SyslogLevel",
}  # fmt: skip
#: PINs of the card in the journal test: distinctive, so that finding them means a leak.
JOURNAL_PINS = {"auth_pin": "8642", "sign_password": "QZ7Y4K2W"}


@pytest.fixture(scope="module")
def user_manager(sandbox) -> Iterator[UserManager]:
    """A real user manager for the module; the tests fail (never skip) when it cannot start."""
    manager = UserManager(
        sandbox.socket_path.parent, expose=[Path(sys.base_prefix), Path(sys.prefix), REPO]
    ).start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture
def user(user_manager: UserManager) -> Iterator[UserManager]:
    """The test user with mncd installed by ``mncd --install-user-service``, not running yet.
    Afterwards mncd is stopped and uninstalled, and what the test changed is undone."""
    m = user_manager
    m.mark_journal()  # each test reads only its own part of the journal
    m.run(str(MNCD), "--install-user-service")
    yield m
    m.systemctl("stop", UNIT, check=False)
    m.systemctl("reset-failed", UNIT, check=False)  # also resets the start rate limit
    m.systemctl("unset-environment", "MNCD_TEST_HOOKS", check=False)
    m.run(str(MNCD), "--uninstall-user-service", check=False)
    m.run("rm", "-rf", str(dropin_dir(m)), str(m.home / ".local" / "state" / "mncd"), check=False)
    m.systemctl("daemon-reload", check=False)


# -- helpers: what the user would type ---------------------------------------------------------


def dropin_dir(m: UserManager) -> Path:
    return m.home / ".config" / "systemd" / "user" / f"{UNIT}.d"


def unit_path(m: UserManager) -> Path:
    return m.home / ".config" / "systemd" / "user" / UNIT


def activation_path(m: UserManager) -> Path:
    return m.home / ".local" / "share" / "dbus-1" / "services" / f"{BUS_NAME}.service"


def write_as_user(m: UserManager, path: Path, text: str) -> None:
    m.run("mkdir", "-p", str(path.parent))
    m.run("sh", "-c", 'cat > "$1"', "sh", str(path), input=text)


def dropin(m: UserManager, name: str, text: str) -> None:
    """A drop-in for mncd.service in the user's configuration, then daemon-reload."""
    write_as_user(m, dropin_dir(m) / f"{name}.conf", text)
    m.systemctl("daemon-reload")


def bus_call(m: UserManager, *args: str, check: bool = True) -> Any:
    """``busctl --user --json=short call ARGS``: the reply's data."""
    result = m.run("busctl", "--user", "--json=short", "call", *args, check=check)
    if result.returncode != 0 or not result.stdout.strip():
        return None  # failed, or a reply without arguments
    return json.loads(result.stdout)["data"]


def get_status(m: UserManager) -> dict[str, Any]:
    return unwrap_json(bus_call(m, BUS_NAME, OBJECT_PATH, BUS_NAME, "GetStatus")[0])


def owner_pid(m: UserManager) -> int | None:
    """The pid of the process that owns mncd's bus name, None when nobody does."""
    data = bus_call(
        m, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "GetConnectionUnixProcessID", "s", BUS_NAME, check=False,
    )  # fmt: skip
    return data[0] if data else None


def gdbus(m: UserManager, method: str, *args: str) -> str:
    """``gdbus call --session``: its output, or CallError with the D-Bus error name."""
    result = m.run(
        "gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path", OBJECT_PATH,
        "--timeout", "120", "--method", f"{BUS_NAME}.{method}", *args, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        match = re.search(r"GDBus\.Error:([\w.]+): (.*)", result.stderr, re.S)
        name = match.group(1) if match else "unknown"
        raise CallError(name, result.stderr.strip())
    return result.stdout


def state(m: UserManager) -> dict[str, str]:
    return m.show(UNIT, "ActiveState", "SubState", "MainPID", "NRestarts", "Result")


def wait_running(m: UserManager, restarts: int = 0, not_pid: str = "") -> dict[str, str]:
    """Wait until mncd is active (running) after ``restarts`` restarts, in a process other than
    ``not_pid``, and owns its bus name."""

    def running() -> dict[str, str] | None:
        now = state(m)
        done = (
            (now["ActiveState"], now["SubState"]) == ("active", "running")
            and int(now["NRestarts"]) == restarts
            and now["MainPID"] not in ("0", not_pid)
            and owner_pid(m) == int(now["MainPID"])
        )
        return now if done else None

    return wait_for(running, f"mncd running after {restarts} restart(s)", timeout=120)


def wait_card_read(m: UserManager) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        status = get_status(m)
        return status if status["auth"]["source"] == "card" else None

    return wait_for(read, "mncd to read the card", timeout=60)


def unit_journal(m: UserManager) -> list[dict[str, Any]]:
    return m.journal("--unit", UNIT)


def messages(entries: list[dict[str, Any]], identifier: str) -> list[tuple[str, str]]:
    """(priority, message) of the entries logged by ``identifier`` (mncd, systemd)."""
    return [
        (e.get("PRIORITY", ""), e.get("MESSAGE", ""))
        for e in entries
        if e.get("SYSLOG_IDENTIFIER") == identifier and isinstance(e.get("MESSAGE"), str)
    ]


def verify(certificate: bytes, signature: bytes, data: bytes) -> None:
    key = x509.load_der_x509_certificate(certificate).public_key()
    key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def shipped_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str
    parser.read(REPO / "systemd" / UNIT)
    return parser["Service"]


# -- tests -------------------------------------------------------------------------------------


def test_no_delegable_cgroups_is_a_failure_with_the_reason(tmp_path):
    (tmp_path / "unified").mkdir()
    (tmp_path / "systemd").mkdir()
    with pytest.raises(UserManagerError, match="no delegable cgroups"):
        cgroup_hierarchies(tmp_path)
    assert [p.name for p in cgroup_hierarchies()] in (["cgroup"], ["unified", "systemd"])


def test_installed_unit_starts_and_reaches_active_running(user, card):
    m = user
    installed = unit_path(m).read_text()
    assert f"ExecStart={MNCD}\n" in installed  # the installed command, not /usr/bin/mncd
    assert f"Exec={MNCD}\n" in activation_path(m).read_text()
    assert m.show(UNIT, "FragmentPath", "LoadState") == {
        "FragmentPath": str(unit_path(m)),
        "LoadState": "loaded",
    }

    m.systemctl("start", UNIT)  # Type=notify: returns once mncd has sent READY=1
    now = wait_running(m)
    shown = m.show(UNIT, "Type", "NotifyAccess", "StatusText", "WatchdogUSec", "Result")
    assert shown["Type"] == "notify" and shown["NotifyAccess"] == "main"
    assert shown["WatchdogUSec"] == "30s" and shown["Result"] == "success"
    status_text = m.systemctl("status", UNIT).stdout
    assert "Active: active (running)" in status_text
    assert f"Main PID: {now['MainPID']} (mncd)" in status_text
    # The daemon's own STATUS= once it has read the card (it came over the notify socket).
    wait_card_read(m)
    wait_for(
        lambda: m.show(UNIT, "StatusText")["StatusText"] == "My Number Card present",
        "STATUS= for the card",
    )
    assert 'Status: "My Number Card present"' in m.systemctl("status", UNIT).stdout
    status = get_status(m)
    assert status["state"] == "card-present" and status["auth"]["state"] == "valid"


def test_bus_activation_goes_through_the_manager(user, card):
    """With Exec=/bin/false in the activation file, only the manager (SystemdService=) can start
    mncd: a successful call proves it did."""
    m = user
    shipped = activation_path(m).read_text()
    assert "SystemdService=mncd.service\n" in shipped
    # The check can fail: without SystemdService= the bus runs /bin/false, and the call fails.
    alone = re.sub(r"(?m)^Exec=.*$", "Exec=/bin/false", shipped)
    write_as_user(m, activation_path(m), alone.replace("SystemdService=mncd.service\n", ""))
    bus_call(m, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
             "ReloadConfig")  # fmt: skip
    with pytest.raises(CallError) as failed:
        gdbus(m, "GetStatus")
    assert "org.freedesktop.DBus.Error.Spawn" in failed.value.name
    assert state(m)["ActiveState"] == "inactive"

    write_as_user(m, activation_path(m), alone)
    bus_call(m, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
             "ReloadConfig")  # fmt: skip
    output = gdbus(m, "GetStatus")  # the first call starts mncd.service
    # Answered by the daemon the call started: the card is being read, read, or not there.
    assert re.search(r"'state': <'(reading|card-present|no-card)'>", output), output
    now = wait_running(m)
    assert owner_pid(m) == int(now["MainPID"])
    description = m.show(UNIT, "Description")["Description"]
    assert ("6", f"Started mncd.service - {description}.") in messages(unit_journal(m), "systemd")


def test_watchdog_restarts_a_hung_daemon(user, card):
    m = user
    assert "\nWatchdogSec=30\n" in unit_path(m).read_text()  # as shipped
    # The same watchdog, shorter, so that the test waits 10 s instead of 30 s.
    dropin(m, "watchdog", "[Service]\nWatchdogSec=10\n")
    m.systemctl("set-environment", "MNCD_TEST_HOOKS=1")
    m.systemctl("start", UNIT)
    before = wait_running(m)
    wait_card_read(m)

    m.systemctl("kill", "--kill-whom=main", "--signal=SIGUSR2", UNIT)  # the main loop hangs
    after = wait_running(m, restarts=1, not_pid=before["MainPID"])
    assert after["MainPID"] != before["MainPID"]
    entries = unit_journal(m)
    manager = messages(entries, "systemd")
    assert ("3", "mncd.service: Watchdog timeout (limit 10s)!") in manager
    assert ("4", "mncd.service: Failed with result 'watchdog'.") in manager
    assert any(text.startswith("mncd.service: Scheduled restart job") for _, text in manager)
    ours = messages(entries, "mncd")
    assert ("4", "test hook: SIGUSR2 received, the main loop hangs from now on") in ours
    # Where it hung, from the daemon's last words (faulthandler), as errors in the journal.
    assert ("3", "Fatal Python error: Aborted") in ours
    assert any(p == "3" and "in hang" in text for p, text in ours)
    # The new daemon serves.
    assert wait_card_read(m)["state"] == "card-present"


def test_crash_and_lost_bus_restart_but_stop_does_not(user, card):
    m = user
    m.systemctl("start", UNIT)
    first = wait_running(m)

    m.systemctl("kill", "--kill-whom=main", "--signal=SIGKILL", UNIT)  # a crash
    second = wait_running(m, restarts=1, not_pid=first["MainPID"])
    manager = messages(unit_journal(m), "systemd")
    assert ("4", "mncd.service: Main process exited, code=killed, status=9/KILL") in manager

    # The session bus goes away: mncd exits with 1, and comes back once the bus is back.
    m.systemctl("restart", "dbus.service")
    wait_running(m, restarts=2, not_pid=second["MainPID"])
    entries = unit_journal(m)
    assert any(
        p == "3" and text.startswith("lost the session bus")
        for p, text in messages(entries, "mncd")
    )
    assert (
        "5",
        "mncd.service: Main process exited, code=exited, status=1/FAILURE",
    ) in messages(entries, "systemd")
    assert wait_card_read(m)["state"] == "card-present"

    m.systemctl("stop", UNIT)
    stopped = m.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    seen = len(unit_journal(m))
    restart_sec = float(m.show(UNIT, "RestartUSec")["RestartUSec"].rstrip("s"))
    with pytest.raises(TimeoutError):  # no restart comes, however long one waits for it
        wait_for(lambda: state(m)["ActiveState"] != "inactive", "a restart", 3 * restart_sec)
    later = messages(unit_journal(m)[seen:], "systemd")
    assert not any("Scheduled restart job" in text for _, text in later)
    assert owner_pid(m) is None


def test_journal_has_mncd_lines_with_priorities_and_no_pin(user, sandbox, insert_card):
    m = user
    card = insert_card(**JOURNAL_PINS)
    # Debug logging too: whatever mncd logs at any level must be free of PINs.
    dropin(m, "verbose", f"[Service]\nExecStart=\nExecStart={MNCD} --verbose\n")
    # mncd starts while pcscd is away (a warning), then pcscd comes back with the card.
    sandbox.pcscd("stop")
    try:
        m.systemctl("start", UNIT)
        wait_running(m)
        wait_for(lambda: get_status(m)["state"] == "pcsc-unavailable", "pcsc-unavailable")
    finally:
        sandbox.pcscd("start")
    card.reinsert()
    wait_card_read(m)
    output = gdbus(
        m, "Sign", gvariant_bytes(b"contract"), "sha256",
        f"{{'pin': <'{JOURNAL_PINS['sign_password']}'>}}",
    )  # fmt: skip
    signature, certificate = parse_gvariant_arrays(output)
    verify(certificate, signature, b"contract")
    with pytest.raises(CallError) as wrong:
        gdbus(m, "Authenticate", gvariant_bytes(b"x"), "{'pin': <'9753'>}")
    assert wrong.value.name == ERR + "PinIncorrect"

    entries = unit_journal(m)
    ours = [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "mncd"]
    assert {e["_SYSTEMD_USER_UNIT"] for e in ours} == {UNIT}
    logged = messages(entries, "mncd")
    assert ("6", f"mncd 0.1.0 ready on the session bus as {BUS_NAME}") in logged
    assert any(p == "6" and t.startswith("Sign requested by /usr/bin/gdbus") for p, t in logged)
    assert any(p == "4" and t.startswith("PC/SC service unavailable") for p, t in logged)
    assert any(p == "7" for p, _ in logged)  # --verbose reached the journal
    assert {p for p, _ in logged} <= {"3", "4", "6", "7"}
    text = journalctl_text(m)
    assert "Sign requested by" in text  # the check below reads what mncd logged
    for pin in (card.profile.auth_pin, card.profile.sign_password, "9753"):
        assert not re.search(rf"\b{pin}\b", text), f"a PIN in the journal: {pin}"


def journalctl_text(m: UserManager) -> str:
    """Every field of every entry of the user's journal, except ids and counters (a cursor or
    a timestamp may contain any four digits)."""
    skip = ("__CURSOR", "__SEQNUM", "__SEQNUM_ID", "_BOOT_ID", "_MACHINE_ID")
    values = [
        str(value)
        for entry in m.journal()
        for key, value in entry.items()
        if key not in skip and not key.endswith(("TIMESTAMP", "INVOCATION_ID"))
    ]
    return "\n".join(values)


def test_hardening_of_the_shipped_unit_is_active_while_sign_works(user, card):
    m = user
    m.systemctl("start", UNIT)
    pid = wait_running(m)["MainPID"]
    wait_card_read(m)
    hardening = {k: v for k, v in shipped_service().items() if k not in NOT_HARDENING}
    assert {"MemoryDenyWriteExecute", "SystemCallFilter", "RestrictAddressFamilies"} <= set(
        hardening
    )
    shown = m.show(UNIT, *hardening)
    syscall_filter = set(shown.pop("SystemCallFilter").split())
    families = set(shown.pop("RestrictAddressFamilies").split())
    errno = shown.pop("SystemCallErrorNumber")
    expected = {k: v for k, v in hardening.items() if k in shown}
    assert shown == expected  # booleans, native, UMask, … as written
    assert families == set(hardening["RestrictAddressFamilies"].split())
    assert errno in ("1", "EPERM") and hardening["SystemCallErrorNumber"] == "EPERM"
    assert hardening["SystemCallFilter"] == "@system-service"
    assert {"read", "connect", "sendmsg", "recvmsg", "ioctl"} <= syscall_filter
    assert not {"mount", "reboot", "ptrace", "kexec_load", "init_module"} & syscall_filter
    # The kernel agrees: no new privileges, and a seccomp filter in place.
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SECCOMP_MODE_FILTER

    # pyscard's SWIG module and cryptography's bindings under all of it: Sign and Authenticate.
    document = b"signed under systemd's hardening"
    signature, certificate = parse_gvariant_arrays(
        gdbus(m, "Sign", gvariant_bytes(document), "sha256",
              f"{{'pin': <'{card.profile.sign_password}'>}}")
    )  # fmt: skip
    assert certificate == card.certificates()["sign"]
    verify(certificate, signature, document)
    signature, certificate = parse_gvariant_arrays(
        gdbus(
            m, "Authenticate", gvariant_bytes(b"login"), f"{{'pin': <'{card.profile.auth_pin}'>}}"
        )
    )
    assert certificate == card.certificates()["auth"]
    verify(certificate, signature, b"login")
    assert state(m)["MainPID"] == pid  # the same process did it all, and still runs
    assert not any(p in ("0", "1", "2", "3") for p, _ in messages(unit_journal(m), "mncd"))


def test_reinstall_restarts_and_uninstall_stops_and_removes(user, card):
    m = user
    m.systemctl("start", UNIT)
    first = wait_running(m)
    # Installing again (say, after an upgrade) restarts the running daemon.
    result = m.run(str(MNCD), "--install-user-service")
    assert f"both run {MNCD}" in result.stdout
    # A user manager runs here: the advice is systemd's.
    assert "To start it at login too: systemctl --user enable --now mncd.service" in result.stdout
    assert "No systemd user manager" not in result.stdout
    wait_for(lambda: state(m)["MainPID"] not in ("0", first["MainPID"]), "a new mncd")
    wait_running(m, not_pid=first["MainPID"])

    result = m.run(str(MNCD), "--uninstall-user-service")
    assert "mncd is stopped" in result.stdout
    assert m.show(UNIT, "LoadState", "ActiveState") == {
        "LoadState": "not-found",
        "ActiveState": "inactive",
    }
    assert not unit_path(m).exists() and not activation_path(m).exists()
    assert owner_pid(m) is None
    with pytest.raises(CallError) as gone:  # nothing starts it any more
        gdbus(m, "GetStatus")
    assert gone.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"
