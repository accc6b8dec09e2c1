"""PKCS#11 for a desktop user: ``mncctl pkcs11 install`` writes the p11-kit module file, and
p11-kit's proxy (``p11tool``, GnuTLS) finds the card through it.

p11-kit ignores per-user module files for root, so this runs as a user made for the test
(``useradd``, removed afterwards): its own session bus, mncd, mncctl and p11tool, with the
machine's pcscd sandbox.
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from busstack import wait_for

import mncd
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

    def run(self, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        """A program of the user's; without the sandbox's pcscd, so that only mncd can show
        it a card (OpenSC's module, which p11-kit's proxy loads too, sees none)."""
        env = {k: v for k, v in self.env.items() if k != "PCSCLITE_CSOCK_NAME"}
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", *(f"{k}={v}" for k, v in env.items()),
             *args], capture_output=True, text=True, timeout=timeout, cwd=self.root,
        )  # fmt: skip

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["runuser", "-u", self.name, "--", "env", *(f"{k}={v}" for k, v in self.env.items()),
             *args], stdout=subprocess.DEVNULL, stderr=log.open("ab"), cwd=self.root,
        )  # fmt: skip

    def mncctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.python, "-m", "mncd.cli.main", *args)


def _user_python(pylib: Path) -> str:
    """An interpreter the user may run, of the version the packages were built for."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        done = subprocess.run(["runuser", "-u", "nobody", "--", candidate, "-c", "print(1)"],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode == 0:
            return candidate
    raise AssertionError(f"no {version} that an unprivileged user can run")


@pytest.fixture
def desktop_user(sandbox) -> Iterator[DesktopUser]:
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
        yield DesktopUser(name, Path(info.pw_dir), root, _user_python(pylib), env)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def user_daemon(desktop_user: DesktopUser) -> Iterator[DesktopUser]:
    """The user's session bus and mncd, as a desktop session would have them."""
    user = desktop_user
    runtime = Path(user.env["XDG_RUNTIME_DIR"])
    config = user.root / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=runtime / "bus", servicedirs="", limits=""))
    bus = user.start("dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile",
                     log=user.root / "bus.log")  # fmt: skip
    daemon = None
    try:
        wait_for((runtime / "bus").exists, "the user's session bus")
        log = user.root / "mncd.log"
        daemon = user.start(user.python, "-m", "mncd.daemon", "--verbose", log=log)
        wait_for((runtime / "mncd" / "pkcs11").exists, f"mncd as {user.name}")
        yield user
        assert "Traceback" not in log.read_text()
    finally:
        for process in (daemon, bus):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=15)


def test_install_then_p11tool_finds_the_card_through_the_module_file(user_daemon, card):
    user = user_daemon
    mine = "model=My%20Number%20Card;manufacturer=JPKI"  # the tokens mncd serves
    listed = user.run("p11tool", "--list-tokens")
    assert listed.returncode == 0 and mine not in listed.stdout  # not installed yet

    installed = user.mncctl("pkcs11", "install")
    assert installed.returncode == 0, installed.stderr
    module = user.home / ".config" / "pkcs11" / "modules" / "mncd.module"
    runtime = user.env["XDG_RUNTIME_DIR"]
    assert f"remote: unix:path={runtime}/mncd/pkcs11" in module.read_text()

    def tokens() -> str:
        return user.run("p11tool", "--list-tokens").stdout

    wait_for(lambda: f"{mine};serial=" in tokens(), "the tokens through p11-kit")
    assert "token=JPKI%20%28User%20Authentication%20PIN%29" in tokens()
    assert "token=JPKI%20%28Digital%20Signature%20PIN%29" in tokens()
    certs = user.run("p11tool", "--list-all-certs",
                     "pkcs11:token=JPKI%20%28User%20Authentication%20PIN%29")  # fmt: skip
    assert "User Authentication Certificate" in certs.stdout, certs.stdout + certs.stderr
    log = (user.root / "mncd.log").read_text()
    assert "PKCS#11 application connected: /usr/bin/p11tool" in log

    removed = user.mncctl("pkcs11", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not module.exists()
    assert mine not in tokens()


def test_install_registers_p11_kit_in_nss_databases_and_uninstall_removes_it(tmp_path):
    home = tmp_path / "home"
    profile = home / ".mozilla" / "firefox" / "abcd.default-release"
    chromium = home / ".pki" / "nssdb"
    for db in (profile, chromium):
        db.mkdir(parents=True)
        subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run")}

    def mncctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mncd.cli.main", "pkcs11", *args],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip

    def modules(db: Path) -> str:
        return subprocess.run(["modutil", "-list", "-dbdir", f"sql:{db}"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip

    for _ in range(2):  # twice: the second time finds it registered
        installed = mncctl("install")
        assert installed.returncode == 0, installed.stderr
    assert "already registered" in installed.stdout
    for db in (profile, chromium):
        listing = modules(db)
        assert "My Number Card (mncd)" in listing and "p11-kit-proxy.so" in listing
    removed = mncctl("uninstall")
    assert removed.returncode == 0, removed.stderr
    for db in (profile, chromium):
        assert "My Number Card (mncd)" not in modules(db)
    assert not (home / ".config" / "pkcs11" / "modules" / "mncd.module").exists()

    # A module file of someone else's is never overwritten or removed.
    foreign = home / ".config" / "pkcs11" / "modules" / "mncd.module"
    foreign.write_text("module: /usr/lib/somebody-else.so\n")
    refused = mncctl("install", "--nss", str(chromium))
    assert refused.returncode == 1 and "not written by mncctl" in refused.stderr
    assert foreign.read_text() == "module: /usr/lib/somebody-else.so\n"
    no_runtime = subprocess.run(
        [sys.executable, "-m", "mncd.cli.main", "pkcs11", "install"], capture_output=True,
        text=True, env={k: v for k, v in env.items() if k != "XDG_RUNTIME_DIR"}, timeout=60,
    )  # fmt: skip
    assert no_runtime.returncode == 1 and "XDG_RUNTIME_DIR" in no_runtime.stderr
