"""The window's desktop files: the shipped ``.desktop`` entry passes desktop-file-validate, and
``mncd --install-user-service`` installs it, its icon and its D-Bus activation file for the
``mncd-window`` beside ``mncd`` (quoted when its path has a space), and removes them again."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

from test_systemd_unit import INSTALLER, _env, _fake_mncd, _install

from mncd.api import WINDOW_APP_ID

REPO = Path(__file__).resolve().parent.parent
DESKTOP = REPO / "data" / f"{WINDOW_APP_ID}.desktop"


def read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)


def test_the_desktop_entry_is_valid_and_says_what_it_is():
    result = validate(DESKTOP)
    assert result.returncode == 0 and result.stdout == "", result.stdout
    entry = read_ini(DESKTOP)["Desktop Entry"]
    assert entry["Name[ja]"] == "マイナンバーカード"
    assert entry["Name"] == "My Number Card"
    assert entry["MimeType"] == "application/pdf;"  # offered for PDFs in file managers
    assert entry["DBusActivatable"] == "true"
    assert entry["Icon"] == WINDOW_APP_ID
    assert (REPO / "data" / f"{WINDOW_APP_ID}.svg").read_text().startswith("<?xml")


def test_a_broken_desktop_entry_fails_the_check(tmp_path):
    """The check above can fail."""
    broken = tmp_path / f"{WINDOW_APP_ID}.desktop"
    broken.write_text(DESKTOP.read_text().replace("Type=Application\n", ""))
    assert validate(broken).returncode != 0


def test_install_writes_and_uninstall_removes_the_window_files(tmp_path):
    bin_dir = tmp_path / "マイ bin"
    exe = _fake_mncd(bin_dir)
    window = bin_dir / "mncd-window"
    window.write_text("#!/bin/sh\nexit 0\n")
    window.chmod(0o755)
    data = tmp_path / "data"
    env = _env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(data))
    result = _install(env, str(exe))
    assert result.returncode == 0, result.stderr

    desktop = data / "applications" / f"{WINDOW_APP_ID}.desktop"
    icon = data / "icons" / "hicolor" / "scalable" / "apps" / f"{WINDOW_APP_ID}.svg"
    activation = data / "dbus-1" / "services" / f"{WINDOW_APP_ID}.service"
    assert validate(desktop).returncode == 0, validate(desktop).stdout
    assert shlex.split(read_ini(desktop)["Desktop Entry"]["Exec"]) == [str(window), "%F"]
    service = read_ini(activation)["D-BUS Service"]
    assert service["Name"] == WINDOW_APP_ID
    assert shlex.split(service["Exec"]) == [str(window), "--gapplication-service"]
    assert icon.read_bytes() == (REPO / "data" / f"{WINDOW_APP_ID}.svg").read_bytes()

    result = _install(env, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not desktop.exists() and not icon.exists() and not activation.exists()


def test_without_the_window_nothing_of_it_is_installed(tmp_path):
    exe = _fake_mncd(tmp_path / "bin")
    data = tmp_path / "data"
    env = _env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(data))
    assert _install(env, str(exe)).returncode == 0
    assert not (data / "applications").exists()
    assert (data / "dbus-1" / "services" / "io.github.mncd.MyNumberCard1.service").exists()


__all__ = ["INSTALLER"]
