"""systemd integration: sd_notify, the watchdog interval, journal logging, the user unit, the D-Bus
activation file and scripts/install-user-service.

Real components throughout: datagram sockets for sd_notify, libsystemd as the reference for the
watchdog variables, ``systemd-analyze --user verify`` for the installed unit (it needs only a
private ``$XDG_RUNTIME_DIR``, no running user manager) and a private dbus-daemon for the
installed activation file.
"""

from __future__ import annotations

import configparser
import ctypes
import json
import logging
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd.daemon
from busstack import daemon_on_private_bus, name_has_owner
from systemd.journal import JournalHandler

from mncd.daemon import install
from mncd.daemon import systemd as sd

REPO = Path(__file__).resolve().parents[1]
BUS_NAME = "io.github.mncd.MyNumberCard1"
SHIPPED_UNIT = REPO / "systemd" / "mncd.service"
SHIPPED_ACTIVATION = REPO / "dbus" / f"{BUS_NAME}.service"
INSTALLER = REPO / "scripts" / "install-user-service"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="mncd-", dir="/tmp") as d:
        yield Path(d)


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(5)
    return sock


def _receive(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and the sender's pid, as systemd sees them (SCM_CREDENTIALS)."""
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pids = [
        struct.unpack("3i", cdata)[0]
        for level, kind, cdata in ancdata
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    ]
    assert len(pids) == 1
    return data, pids[0]


# --- notify ---------------------------------------------------------------------------------


def test_notify_sends_one_datagram_to_a_filesystem_socket(short_dir, monkeypatch):
    path = short_dir / "notify"
    with _receiver(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd.notify("READY=1", "STATUS=カードなし") is True
        data, pid = _receive(sock)
        assert data == "READY=1\nSTATUS=カードなし".encode()
        assert pid == os.getpid()  # NotifyAccess=main: it must come from this process
        assert sd.notify("WATCHDOG=1") is True
        assert _receive(sock)[0] == b"WATCHDOG=1"


def test_notify_abstract_socket_matches_libsystemd(monkeypatch):
    name = f"mncd-test-{uuid.uuid4().hex}"
    with _receiver(b"\0" + name.encode()) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd.notify("STOPPING=1", "STATUS=bye") is True
        ours = _receive(sock)
        assert ours == (b"STOPPING=1\nSTATUS=bye", os.getpid())
        # The reference implementation (sd_notify) sends the same bytes.
        assert systemd.daemon.notify("STOPPING=1\nSTATUS=bye") is True
        assert _receive(sock) == ours


def test_notify_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sd.notify("READY=1") is False


def test_notify_errors(short_dir, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody-listens"))
    with pytest.raises(OSError):
        sd.notify("READY=1")
    for bad in [(), ("READY",), ("READY=1\nSTATUS=x",)]:
        with pytest.raises(ValueError):
            sd.notify(*bad)
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with pytest.raises(ValueError):
        sd.notify("READY=1")


# --- watchdog -------------------------------------------------------------------------------


def _libsystemd_watchdog() -> float | None:
    """What sd_watchdog_enabled() says for the current environment."""
    lib = ctypes.CDLL("libsystemd.so.0")
    usec = ctypes.c_uint64(0)
    r = lib.sd_watchdog_enabled(0, ctypes.byref(usec))
    return usec.value / 2 / 1_000_000 if r > 0 else None


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("1000", None, 0.0005),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("30000000", "nope", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(key, value)
    assert sd.watchdog_interval() == expected
    assert _libsystemd_watchdog() == expected


# --- logging --------------------------------------------------------------------------------


@pytest.fixture
def clean_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("dbus_next").level)
    try:
        yield root
    finally:
        for h in root.handlers[:]:
            if h not in saved[0]:
                root.removeHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("dbus_next").setLevel(saved[2])


def _stderr_stream() -> str:
    st = os.fstat(2)
    return f"{st.st_dev}:{st.st_ino}"


def _ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, "_mncd_handler", False)]


def test_setup_logging_uses_the_journal_when_stderr_is_the_journal(clean_logging, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", _stderr_stream())
    assert sd.under_systemd()
    sd.setup_logging()
    [handler] = _ours(clean_logging)
    assert isinstance(handler, JournalHandler)
    assert clean_logging.level == logging.INFO
    assert logging.getLogger("dbus_next").getEffectiveLevel() == logging.WARNING
    sent: list[tuple[str, dict]] = []

    def send(message: str, /, **fields: object) -> None:  # replaces only the transport
        sent.append((message, fields))

    handler.send = send
    logging.getLogger("mncd.test").warning("card %s", "removed")
    logging.getLogger("mncd.test").debug("not shown")
    [(message, fields)] = sent
    assert message == "card removed"
    assert fields["SYSLOG_IDENTIFIER"] == "mncd"
    assert fields["PRIORITY"] == "4"
    assert fields["LOGGER"] == "mncd.test"


@pytest.mark.parametrize("journal_stream", [None, "", "1:2", "garbage", "12:x"])
def test_setup_logging_uses_stderr_otherwise(clean_logging, monkeypatch, capsys, journal_stream):
    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    assert not sd.under_systemd()
    sd.setup_logging()
    [handler] = _ours(clean_logging)
    assert type(handler) is logging.StreamHandler
    log = logging.getLogger("mncd.test")
    log.info("ready")
    log.debug("details")
    logging.getLogger("dbus_next.message_bus").info("chatty")
    logging.getLogger("dbus_next.message_bus").warning("worth seeing")
    assert capsys.readouterr().err.splitlines() == [
        "INFO mncd.test: ready",
        "WARNING dbus_next.message_bus: worth seeing",
    ]


def test_setup_logging_verbose_and_repeated(clean_logging, monkeypatch, capsys):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    other = logging.NullHandler()
    clean_logging.addHandler(other)
    sd.setup_logging()
    sd.setup_logging(verbose=True)
    assert len(_ours(clean_logging)) == 1
    assert other in clean_logging.handlers
    assert clean_logging.level == logging.DEBUG
    logging.getLogger("mncd.test").debug("details")
    assert capsys.readouterr().err == "DEBUG mncd.test: details\n"


# --- unit, activation file, installer -------------------------------------------------------


STAND_IN = f"""#!{sys.executable}
# Stands in for mncd: installs itself as mncd does; otherwise records its argv next to itself
# and, when D-Bus activated, takes the name.
import asyncio, os, sys
from pathlib import Path
from dbus_next.aio import MessageBus

if sys.argv[1:2] in (["--install-user-service"], ["--uninstall-user-service"]):
    from mncd.daemon.main import main
    sys.exit(main())
Path(sys.argv[0]).with_name("ran").write_text("\\n".join(sys.argv) + "\\n")

async def main():
    bus = await MessageBus(bus_address=os.environ["DBUS_STARTER_ADDRESS"]).connect()
    await bus.request_name("{BUS_NAME}")
    bus.disconnect()

if "DBUS_STARTER_ADDRESS" in os.environ:
    asyncio.run(main())
"""


def _fake_mncd(directory: Path) -> Path:
    """An executable standing in for mncd (see STAND_IN)."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "mncd"
    exe.write_text(STAND_IN)
    exe.chmod(0o755)
    return exe


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with no user manager and no session bus to talk to."""
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "DBUS_")) and k not in ("HOME", "NOTIFY_SOCKET")
    }
    env.update(HOME=str(tmp / "home"), XDG_RUNTIME_DIR=str(runtime), **extra)
    return env


def _install(
    env: dict[str, str], *args: str, installer: Path = INSTALLER
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(installer), *args], env=env, capture_output=True, text=True, timeout=60
    )


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def _verify(unit: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _mncd_warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "mncd" in line]


def test_install_verify_and_uninstall(short_dir):
    exe = _fake_mncd(short_dir / "マイ bin")  # a space: both files must quote the path
    env = _env(
        short_dir,
        XDG_CONFIG_HOME=str(short_dir / "config"),
        XDG_DATA_HOME=str(short_dir / "data"),
    )
    result = _install(env, str(exe))
    assert result.returncode == 0, result.stderr
    unit = short_dir / "config" / "systemd" / "user" / "mncd.service"
    activation = short_dir / "data" / "dbus-1" / "services" / f"{BUS_NAME}.service"

    # systemd accepts the installed unit as a user unit: no error, no warning about it.
    verified = _verify(unit, env)
    assert verified.returncode == 0, verified.stderr
    assert _mncd_warnings(verified) == []

    # Only ExecStart= changed, and it names the binary.
    shipped = SHIPPED_UNIT.read_text().splitlines()
    installed = unit.read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b]
    assert changed == [("ExecStart=/usr/bin/mncd", f'ExecStart="{exe}"')]
    service = _read_ini(unit)["Service"]
    assert shlex.split(service["ExecStart"]) == [str(exe)]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["BusName"] == BUS_NAME
    assert service["WatchdogSec"] == "30"
    assert _read_ini(unit)["Install"]["WantedBy"] == "default.target"

    parsed = _read_ini(activation)
    assert parsed.sections() == ["D-BUS Service"]
    assert dict(parsed["D-BUS Service"]) == {
        "Name": BUS_NAME,
        "Exec": service["ExecStart"],
        "SystemdService": "mncd.service",
    }
    assert _read_ini(SHIPPED_ACTIVATION)["D-BUS Service"]["Exec"] == "/usr/bin/mncd"

    # Uninstall removes exactly the two files.
    neighbour = activation.with_name("org.example.Other.service")
    neighbour.write_text("[D-BUS Service]\nName=org.example.Other\nExec=/bin/true\n")
    result = _install(env, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not unit.exists() and not activation.exists()
    assert neighbour.exists()


def test_verify_reports_a_broken_unit(short_dir):
    """The check above can fail: systemd-analyze flags what is wrong with a unit."""
    exe = _fake_mncd(short_dir / "bin")
    env = _env(short_dir)
    broken = short_dir / "mncd.service"
    text = SHIPPED_UNIT.read_text().replace("ExecStart=/usr/bin/mncd", f"ExecStart={exe}")
    broken.write_text(text.replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"))
    assert _mncd_warnings(_verify(broken, env))
    missing = short_dir / "missing" / "mncd.service"
    missing.parent.mkdir()
    missing.write_text(text.replace(str(exe), str(short_dir / "absent")))
    result = _verify(missing, env)
    assert result.returncode != 0
    assert _mncd_warnings(result)


def test_install_defaults_to_the_repository_venv_and_home(tmp_path):
    """Without arguments: <repo>/.venv/bin/mncd, ~/.config and ~/.local/share. The shipped files
    come with the installed package, not from the checkout."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(INSTALLER, repo / "scripts")
    exe = _fake_mncd(repo / ".venv" / "bin")
    env = _env(tmp_path)
    result = _install(env, installer=repo / "scripts" / "install-user-service")
    assert result.returncode == 0, result.stderr
    home = tmp_path / "home"
    unit = _read_ini(home / ".config/systemd/user/mncd.service")
    activation = _read_ini(home / f".local/share/dbus-1/services/{BUS_NAME}.service")
    assert unit["Service"]["ExecStart"] == str(exe)
    assert activation["D-BUS Service"]["Exec"] == str(exe)


def test_install_refuses_what_it_cannot_install(tmp_path):
    env = _env(tmp_path)
    result = _install(env, str(tmp_path / "no-such-mncd"))
    assert result.returncode != 0
    assert "not an executable" in result.stderr
    repo = tmp_path / "repo-without-venv"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(INSTALLER, repo / "scripts")
    result = _install(env, installer=repo / "scripts" / "install-user-service")
    assert result.returncode != 0
    assert "run scripts/setup first" in result.stderr
    odd = _fake_mncd(tmp_path / "100%$x")  # % and $ would be expanded by systemd
    result = _install(env, str(odd))
    assert result.returncode != 0
    assert "unsupported characters" in result.stderr
    assert not (tmp_path / "home").exists()


def test_mncd_installs_itself(tmp_path):
    """``mncd --install-user-service`` without a path installs the mncd command it was run as;
    ``python -m mncd.daemon`` installs the mncd beside that Python (a venv's or pipx's)."""
    exe = _fake_mncd(tmp_path / "pipx" / "bin")
    env = _env(tmp_path)
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "mncd.service"
    result = subprocess.run(
        [str(exe), "--install-user-service"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"both run {exe}" in result.stdout
    assert _read_ini(unit)["Service"]["ExecStart"] == str(exe)

    result = subprocess.run(
        [sys.executable, "-m", "mncd.daemon", "--install-user-service"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _read_ini(unit)["Service"]["ExecStart"] == str(Path(sys.executable).with_name("mncd"))

    both = subprocess.run(
        [str(exe), "--install-user-service", "--uninstall-user-service"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert unit.exists()


def test_uninstall_without_a_user_manager_stops_the_running_mncd(tmp_path, sandbox):
    """No systemd: the bus started mncd itself (or the user did); uninstalling ends it."""
    with daemon_on_private_bus(tmp_path, sandbox.env) as daemon:
        env = _env(tmp_path, DBUS_SESSION_BUS_ADDRESS=daemon.bus.address)
        assert _install(env, str(_fake_mncd(tmp_path / "bin"))).returncode == 0
        result = _install(env, "--uninstall")
        assert result.returncode == 0, result.stderr
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) == 0  # SIGTERM: a clean exit
        assert not name_has_owner(daemon.bus.address)


def test_the_package_carries_the_shipped_files():
    """What the installer copies (package data, also in a wheel) is what systemd/ and dbus/ ship."""
    for shipped in (SHIPPED_UNIT, SHIPPED_ACTIVATION):
        assert install.shipped(shipped.name) == shipped.read_text()


def _bus_call(address: str, method: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["busctl", f"--address={address}", "--json=short", "call", "org.freedesktop.DBus",
         "/org/freedesktop/DBus", "org.freedesktop.DBus", method, *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_installed_activation_file_starts_the_installed_binary(short_dir):
    """A real dbus-daemon reads the installed file and runs its Exec= (path with a space)."""
    exe = _fake_mncd(short_dir / "マイ bin")
    env = _env(short_dir, XDG_DATA_HOME=str(short_dir / "data"))
    assert _install(env, str(exe)).returncode == 0
    services = short_dir / "data" / "dbus-1" / "services"
    socket_path = short_dir / "bus"
    config = short_dir / "bus.conf"
    config.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig><type>session</type><listen>unix:path={socket_path}</listen>"
        f"<servicedir>{services}</servicedir>"
        '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
        '<allow eavesdrop="true"/><allow own="*"/></policy>'
        "</busconfig>\n"
    )
    daemon = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert daemon.poll() is None and time.monotonic() < deadline, "dbus-daemon failed"
            time.sleep(0.02)
        address = f"unix:path={socket_path}"
        listed = _bus_call(address, "ListActivatableNames")
        assert listed.returncode == 0, listed.stderr
        assert BUS_NAME in listed.stdout
        # Activation runs Exec= (one word despite the space) and the stand-in takes the name.
        started = _bus_call(address, "StartServiceByName", "su", BUS_NAME, "0")
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["data"] == [1]  # DBUS_START_REPLY_SUCCESS
        assert (exe.parent / "ran").read_text().splitlines() == [str(exe)]
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.mark.parametrize("lang", ["ja_JP.UTF-8", "C.UTF-8"], ids=["ja", "en"])
def test_install_without_a_user_manager_says_what_works_and_uninstall_removes_the_enable_link(
    tmp_path, lang
):
    """No user manager here: the advice says what works and what does not (and recommends no
    systemctl --user); a link left by an offline ``systemctl --user enable`` goes on uninstall."""
    exe = _fake_mncd(tmp_path / "bin")
    env = _env(tmp_path, LANG=lang, LANGUAGE="")
    run = {"env": env, "capture_output": True, "text": True, "timeout": 60}
    installed = subprocess.run([str(exe), "--install-user-service"], **run)
    assert installed.returncode == 0, installed.stderr
    said = installed.stdout
    if lang == "C.UTF-8":
        assert f"both run {exe}." in said
        assert "No systemd user manager runs in this session. What works: mncd starts" in said
        assert "What does not: starting it at login" in said
    else:
        assert f"どちらも {exe} を起動します。" in said
        assert "このセッションではsystemdのユーザーマネージャーが動いていません。" in said
        assert "使えること:" in said and "使えないこと:" in said
    assert "enable --now" not in said and "systemctl --user enable" not in said
    enabled = subprocess.run(["systemctl", "--user", "enable", "mncd.service"], **run)
    assert enabled.returncode == 0, enabled.stderr  # systemctl links it without a manager
    link = tmp_path / "home/.config/systemd/user/default.target.wants/mncd.service"
    assert link.is_symlink()
    removed = subprocess.run([str(exe), "--uninstall-user-service"], **run)
    assert removed.returncode == 0, removed.stderr
    assert not link.is_symlink() and not link.parent.joinpath("mncd.service").exists()
    assert ("mncd is stopped." if lang == "C.UTF-8" else "mncdを停止しました。") in removed.stdout


@pytest.mark.parametrize("lang", ["ja_JP.UTF-8", "C.UTF-8"], ids=["ja", "en"])
def test_mncd_help_in_the_users_language(tmp_path, lang):
    env = {**_env(tmp_path, LANG=lang, LANGUAGE=""), "COLUMNS": "80"}
    mncd = str(Path(sys.executable).with_name("mncd"))
    shown = subprocess.run([mncd, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    if lang == "C.UTF-8":
        assert text.startswith("usage: mncd ") and "the My Number Card daemon" in text
    else:
        assert text.startswith("使い方: mncd ") and "マイナンバーカードを使うためのデーモン" in text
        assert "インストールして終了する" in "".join(text.split()) and "show this help" not in text
    from mncd.terminal import display_width

    assert all(display_width(line) <= 80 for line in text.splitlines()), text
