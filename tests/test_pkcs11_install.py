"""``mncctl pkcs11 install`` finds every place a Firefox keeps its profiles and Chromium's NSS
database, says when it finds none, and keeps OpenSC's module out of p11-kit's proxy only when
p11-kit would load it there. (Real NSS databases and modutil; p11-kit's loading of the files is
tested as a user in test_pkcs11_user.py and test_browsers.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mncd.cli import pkcs11
from mncd.cli.p11kit import modules

PLACES = (
    ".mozilla/firefox/a1.default-release",
    ".config/mozilla/firefox/b2.default-esr",
    "snap/firefox/common/.mozilla/firefox/c3.default",
    ".var/app/org.mozilla.firefox/.mozilla/firefox/d4.default-release",
)


def _mncctl(home: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "LANG": "C.UTF-8", "LANGUAGE": ""}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "mncd.cli.main", "pkcs11", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def _registered(db: Path) -> bool:
    listed = subprocess.run(["modutil", "-list", "-dbdir", f"sql:{db}"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    return "My Number Card (mncd)" in listed.stdout


def test_every_firefox_profile_place_is_found_and_registered(tmp_path):
    home = tmp_path / "home"
    for place in PLACES:
        db = home / place
        db.mkdir(parents=True)
        subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    installed = _mncctl(home, tmp_path, "install")
    assert installed.returncode == 0, installed.stderr
    for place in PLACES:
        assert f"NSS database {home / place}: registered p11-kit's proxy" in installed.stdout
        assert _registered(home / place)
    assert "no Firefox profile found" not in installed.stdout
    removed = _mncctl(home, tmp_path, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not any(_registered(home / place) for place in PLACES)


def test_no_profile_found_is_said_with_what_to_do(tmp_path):
    home = tmp_path / "empty-home"
    home.mkdir()
    installed = _mncctl(home, tmp_path, "install")
    assert installed.returncode == 0, installed.stderr
    line = next(x for x in installed.stdout.splitlines() if x.startswith("no Firefox profile"))
    assert "~/.config/mozilla/firefox" in line and "start Firefox once" in line
    # Chromium is installed here: its database is made, as Chromium would at its first start.
    assert _registered(home / ".pki" / "nssdb")


def test_opensc_is_kept_out_of_the_proxy_only_when_p11_kit_would_load_it_there(tmp_path):
    system, user = tmp_path / "system", tmp_path / "user"
    system.mkdir()
    user.mkdir()
    assert pkcs11.opensc_overrides(user, (system,)) == []  # no OpenSC: nothing to do
    (system / "opensc-pkcs11.module").write_text("module: opensc-pkcs11.so\n")
    (override,) = pkcs11.opensc_overrides(user, (system,))
    assert override.needed and not override.ours
    assert override.path == user / "opensc-pkcs11.module"
    # The user's own file already keeps it out: not needed, and not mncctl's to change.
    override.path.write_text("disable-in: p11-kit-proxy, firefox\n")
    (override,) = pkcs11.opensc_overrides(user, (system,))
    assert not override.needed and not override.ours
    (config,) = modules(user, (system,))
    assert config.library == "opensc-pkcs11.so" and not config.loaded_by("p11-kit-proxy")
    assert config.loaded_by("p11tool")
    # What mncctl writes is recognized as its own (and so removed by uninstall).
    override.path.write_text(pkcs11.opensc_override_text())
    (override,) = pkcs11.opensc_overrides(user, (system,))
    assert override.ours


def test_doctor_names_any_module_of_the_proxy_whose_token_is_the_card(tmp_path, monkeypatch):
    from mncd.cli.doctor import FAIL, OK, check_other_modules

    monkeypatch.setenv("HOME", str(tmp_path))
    user = tmp_path / ".config" / "pkcs11" / "modules"
    user.mkdir(parents=True)
    (user / "opensc-pkcs11.module").write_text(pkcs11.opensc_override_text())
    (user / "vendor.module").write_text("module: libvendor-pkcs11.so\n")
    listing = (
        "vendor: libvendor-pkcs11.so\n    library-description: a vendor's module\n"
        "    token: JPKI (User Authentication PIN)\n        manufacturer: JPKI\n"
        "mncd: p11-kit-client.so\n    token: JPKI (User Authentication PIN)\n"
    )
    found = check_other_modules(listing)
    assert found.level == FAIL and "the module vendor also sees the card" in found.text
    assert f"disable-in: p11-kit-proxy in {user / 'vendor.module'}" in found.text
    (user / "vendor.module").write_text("module: libvendor-pkcs11.so\ndisable-in: p11-kit-proxy\n")
    assert check_other_modules(listing).level == OK
