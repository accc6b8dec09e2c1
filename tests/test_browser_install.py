"""``mncctl browser install|uninstall|status``, the doctor's bridge check and the extension's
manifest (one source for Chromium and Firefox), on a scratch HOME under a non-ASCII name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mncd.browser import identity
from mncd.cli.doctor import check_browser_bridge

MNCCTL = Path(sys.executable).with_name("mncctl")
HOST = Path(sys.executable).with_name("mncd-browser-host")
NAME = "io.github.mncd.browser.json"


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "ダウンロード" / "home"
    path.mkdir(parents=True)
    return path


def mncctl(home: Path, *args: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "LANG": lang, "LANGUAGE": ""}
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run([str(MNCCTL), "browser", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def manifests(home: Path, profile: Path) -> dict[str, Path]:
    return {
        "chrome": home / ".config/google-chrome/NativeMessagingHosts" / NAME,
        "chromium": home / ".config/chromium/NativeMessagingHosts" / NAME,
        "firefox": home / ".mozilla/native-messaging-hosts" / NAME,
        "profile": profile / "NativeMessagingHosts" / NAME,
    }


def test_install_status_uninstall(home):
    profile = home / "プロファイル"
    done = mncctl(home, "install", "--chromium", str(profile))
    assert done.returncode == 0, done.stderr
    paths = manifests(home, profile)
    origin = f"chrome-extension://{identity.chromium_extension_id()}/"
    for browser, path in paths.items():
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["name"] == "io.github.mncd.browser"
        assert data["type"] == "stdio"
        assert Path(data["path"]) == HOST.absolute() and os.access(data["path"], os.X_OK)
        if browser == "firefox":
            assert data["allowed_extensions"] == ["browser-bridge@mncd.github.io"]
            assert "allowed_origins" not in data
        else:
            assert data["allowed_origins"] == [origin]
        assert str(path) in done.stdout
    folder = home / ".local/share/mncd/browser/extension"
    packed = home / ".local/share/mncd/browser/mncd-browser-bridge.xpi"
    assert (folder / "manifest.json").read_bytes() == (
        identity.EXTENSION_DIR / "manifest.json"
    ).read_bytes()
    with zipfile.ZipFile(packed) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in folder.iterdir())
    assert f"Load unpacked): {folder}" in done.stdout
    status = mncctl(home, "status", "--chromium", str(profile))
    assert status.returncode == 0
    assert f"Chromium ({profile}): ok" in status.stdout
    assert f"Firefox: ok ({paths['firefox']})" in status.stdout
    assert identity.chromium_extension_id() in status.stdout
    # Installing again is harmless; uninstalling removes every file it wrote.
    assert mncctl(home, "install", "--chromium", str(profile)).returncode == 0
    removed = mncctl(home, "uninstall", "--chromium", str(profile))
    assert removed.returncode == 0, removed.stderr
    assert not any(path.exists() for path in paths.values())
    assert not folder.exists() and not packed.exists()
    status = mncctl(home, "status")
    assert status.returncode == 1
    assert "Chromium: not installed" in status.stdout


def test_a_manifest_not_written_by_mncctl_is_not_touched(home):
    foreign = home / ".config/chromium/NativeMessagingHosts" / NAME
    foreign.parent.mkdir(parents=True)
    foreign.write_text('{"name": "io.github.mncd.browser", "path": "/opt/other"}')
    done = mncctl(home, "install")
    assert done.returncode == 1
    assert f"{foreign} exists and was not written by mncctl; not touched" in done.stderr
    assert json.loads(foreign.read_text())["path"] == "/opt/other"
    assert mncctl(home, "uninstall").returncode == 1
    assert foreign.exists()


def test_sandboxed_browsers_are_named(home):
    (home / ".var/app/org.chromium.Chromium").mkdir(parents=True)
    (home / "snap/firefox").mkdir(parents=True)
    done = mncctl(home, "install")
    assert done.returncode == 0
    assert "Chromium (Flatpak): sandboxed browsers cannot start mncd-browser-host" in done.stdout
    assert "Firefox (snap): sandboxed browsers cannot start mncd-browser-host" in done.stdout


def test_japanese(home):
    done = mncctl(home, "install", lang="ja_JP.UTF-8")
    assert done.returncode == 0
    assert "Firefox: ホスト設定ファイル" in done.stdout
    status = mncctl(home, "status", lang="ja_JP.UTF-8")
    assert "Firefox: 正常" in status.stdout


def test_the_doctor_speaks_of_the_bridge_once_installed(home):
    assert check_browser_bridge(home) is None  # optional: nothing said before install
    assert mncctl(home, "install").returncode == 0
    finding = check_browser_bridge(home)
    assert finding is not None and finding.level == "ok"
    assert finding.text == "host installed for Google Chrome, Chromium, Firefox"
    manifest = home / ".mozilla/native-messaging-hosts" / NAME
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "path": str(home / "gone")}))
    finding = check_browser_bridge(home)
    assert finding is not None and finding.level == "warn"
    assert "Firefox: the host program it names is missing" in finding.text


def test_the_extension_manifest_serves_both_browsers_on_go_jp_only():
    manifest = identity.extension_manifest()
    assert manifest["manifest_version"] == 3
    assert manifest["permissions"] == ["nativeMessaging"]
    assert "host_permissions" not in manifest
    assert {m for s in manifest["content_scripts"] for m in s["matches"]} == {"https://*.go.jp/*"}
    assert [s.get("world", "ISOLATED") for s in manifest["content_scripts"]] == ["MAIN", "ISOLATED"]
    assert all(s["run_at"] == "document_start" for s in manifest["content_scripts"])
    # Chromium takes the service worker; Firefox the scripts (and its add-on id).
    assert manifest["background"] == {"service_worker": "background.js",
                                      "scripts": ["background.js"]}  # fmt: skip
    assert manifest["browser_specific_settings"]["gecko"]["id"] == identity.firefox_addon_id()
    # The key fixes the Chromium id: 32 letters a–p.
    assert len(identity.chromium_extension_id()) == 32
    assert set(identity.chromium_extension_id()) <= set("abcdefghijklmnop")
    referenced = {"background.js", manifest["action"]["default_popup"]}
    referenced |= {f for s in manifest["content_scripts"] for f in s["js"]}
    assert all((identity.EXTENSION_DIR / name).is_file() for name in referenced)
    # No PIN is ever asked for or passed on: the extension forwards three fields of a page.
    background = (identity.EXTENSION_DIR / "background.js").read_text()
    assert 'const FIELDS = ["mode", "service_id", "digest"];' in background
    for name in ("background.js", "content.js", "page.js", "popup.js", "popup.html"):
        text = (identity.EXTENSION_DIR / name).read_text().lower()
        assert "password" not in text and '"pin"' not in text and "<input" not in text
