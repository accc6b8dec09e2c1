"""PKCS#11 for a desktop user: ``mncctl pkcs11 install`` writes the p11-kit module file, and
p11-kit's proxy (``p11tool``, GnuTLS) finds the card through it.

p11-kit ignores per-user module files for root, so this runs as a user made for the test
(``useradd``, removed afterwards): its own session bus, mncd, mncctl and p11tool, with the
machine's pcscd sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from busstack import wait_for
from desktopuser import DesktopUser
from desktopuser import desktop_user as make_desktop_user
from desktopuser import user_daemon as start_user_daemon


@pytest.fixture
def desktop_user(sandbox) -> Iterator[DesktopUser]:
    with make_desktop_user(sandbox) as user:
        yield user


@pytest.fixture
def user_daemon(desktop_user: DesktopUser) -> Iterator[DesktopUser]:
    """The user's session bus and mncd, as a desktop session would have them."""
    with start_user_daemon(desktop_user) as user:
        yield user


def test_install_then_p11tool_finds_the_card_through_the_module_file(user_daemon, card):
    user = user_daemon
    mine = "model=My%20Number%20Card;manufacturer=JPKI"  # the tokens mncd serves
    listed = user.run("p11tool", "--list-tokens")
    assert listed.returncode == 0 and mine not in listed.stdout  # not installed yet

    installed = user.mncctl("pkcs11", "install")
    assert installed.returncode == 0, installed.stderr
    module = user.home / ".config" / "pkcs11" / "modules" / "mncd.module"
    runtime = user.env["XDG_RUNTIME_DIR"]
    assert f"remote: unix:path={runtime}/mncd/pkcs11-login" in module.read_text()

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
