"""An ordinary desktop user made for a test: its home, session bus and mncd, over the session's
PC/SC sandbox.

p11-kit ignores per-user module files for root, so the PKCS#11 set-up (``mncctl pkcs11
install``, p11-kit's proxy, browsers) is tested as a user made with ``useradd`` and removed
afterwards, with copies of the packages the daemon imports where the user can read them.
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from busstack import wait_for

import mncd
from mncd.vcard.sandbox import PcscSandbox
from mncd.vcard.sessionbus import BUS_CONFIG

#: What the daemon and mncctl import, copied where the test user can read it.
PACKAGES = ("dbus_next", "cryptography", "cffi", "smartcard", "pyudev", "systemd")


@dataclass
class DesktopUser:
    name: str
    home: Path
    root: Path  #: a directory of the test (readable by the user)
    python: str
    env: dict[str, str]

    def command(self, *args: str, pcsc: bool = False) -> list[str]:
        """``args`` run as the user; ``pcsc``: with the sandbox's pcscd (else only mncd can show
        the program a card: OpenSC's module, which p11-kit's proxy may load too, sees none)."""
        env = {k: v for k, v in self.env.items() if pcsc or k != "PCSCLITE_CSOCK_NAME"}
        return ["runuser", "-u", self.name, "--", "env", *(f"{k}={v}" for k, v in env.items()),
                *args]  # fmt: skip

    def run(
        self, *args: str, timeout: int = 60, pcsc: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args, pcsc=pcsc), capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)  # fmt: skip

    def start(self, *args: str, log: Path, pcsc: bool = True) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(*args, pcsc=pcsc), stdout=subprocess.DEVNULL,
                                stderr=log.open("ab"), cwd=self.root)  # fmt: skip

    def mncctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "mncd.cli.main", *args)

    def own(self, path: Path) -> Path:
        """``path`` (a file or directory of the test) handed to the user."""
        info = pwd.getpwnam(self.name)
        for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
            os.chown(item, info.pw_uid, info.pw_gid)
        return path


def _user_python() -> str:
    """An interpreter the user may run, of the version the packages were built for."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        done = subprocess.run(["runuser", "-u", "nobody", "--", candidate, "-c", "print(1)"],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0:
            return candidate
    raise AssertionError(f"no {version} that an unprivileged user can run")


@contextmanager
def desktop_user(sandbox: PcscSandbox) -> Iterator[DesktopUser]:
    name = f"mncd-t{os.getpid() % 100000}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    root = Path(tempfile.mkdtemp(prefix="mncd-user-"))
    try:
        info = pwd.getpwnam(name)
        root.chmod(0o755)
        pylib = root / "pylib"
        site = Path(sysconfig.get_paths()["purelib"])
        shutil.copytree(Path(mncd.__file__).parent, pylib / "mncd",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for package in PACKAGES:  # from the venv, or Debian's (pyscard, seen by the venv)
            where = Path(importlib.import_module(package).__file__).parent  # type: ignore[arg-type]
            shutil.copytree(where, pylib / package,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for backend in site.glob("_cffi_backend*.so"):
            shutil.copy(backend, pylib)
        # The sandbox's pcscd socket is open to everyone; its directory needs traversing.
        sandbox.dir.chmod(sandbox.dir.stat().st_mode | 0o011)
        runtime = root / "runtime"
        runtime.mkdir(mode=0o700)
        os.chown(runtime, info.pw_uid, info.pw_gid)
        env = {
            "HOME": info.pw_dir,
            "USER": name,
            "PYTHONPATH": str(pylib),
            "XDG_RUNTIME_DIR": str(runtime),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
            "PCSCLITE_CSOCK_NAME": str(sandbox.socket_path),
            "LANG": "C.UTF-8",
        }
        yield DesktopUser(name, Path(info.pw_dir), root, _user_python(), env)
    finally:
        _end_processes_of(name)
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _end_processes_of(name: str) -> None:
    """Kill, by pid, what the test user still runs (a browser a failed test left behind)."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


@contextmanager
def user_daemon(user: DesktopUser, **env: str) -> Iterator[DesktopUser]:
    """The user's session bus and mncd, as a desktop session would have them (``env``: more of
    the daemon's environment, e.g. DISPLAY)."""
    runtime = Path(user.env["XDG_RUNTIME_DIR"])
    config = user.root / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=runtime / "bus", servicedirs="", limits=""))
    bus = user.start("dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile",
                     log=user.root / "bus.log")  # fmt: skip
    daemon = None
    try:
        wait_for((runtime / "bus").exists, "the user's session bus")
        log = user.root / "mncd.log"
        command = user.command("env", *(f"{k}={v}" for k, v in env.items()), user.python, "-m",
                               "mncd.daemon", "--verbose", pcsc=True)  # fmt: skip
        daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                                  cwd=user.root)  # fmt: skip
        wait_for((runtime / "mncd" / "pkcs11-login").exists, f"mncd as {user.name}")
        yield user
        assert "Traceback" not in log.read_text()
    finally:
        for process in (daemon, bus):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=15)
