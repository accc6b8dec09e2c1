"""``mncctl browser install|uninstall|status``: the browser bridge for government sites.

``install`` writes the native-messaging host manifests that let Chrome, Chromium and Firefox
(and with ``--chromium DIR`` the Chromium-family browser whose user-data directory is DIR) start
``mncd-browser-host`` for the bridge's extension only, and puts the extension where it can be
loaded: a folder (Chromium family: "Load unpacked") and a packed ``.xpi`` (Firefox). Flatpak and
snap browsers are named: their sandbox keeps its own manifests and may forbid starting hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mncd.browser import identity
from mncd.cli.errors import ExitCode, SetupError
from mncd.cli.files import write_atomically
from mncd.cli.text import _, subcommand
from mncd.i18n import N_

DESCRIPTION = "mncd browser bridge: the My Number Card through mncd (unofficial)"
HOST_COMMAND = "mncd-browser-host"
#: Sandboxed browsers, which keep their own manifest locations and may not start host programs.
SANDBOXED = {
    "Chromium (Flatpak)": ".var/app/org.chromium.Chromium",
    "Google Chrome (Flatpak)": ".var/app/com.google.Chrome",
    "Firefox (Flatpak)": ".var/app/org.mozilla.firefox",
    "Chromium (snap)": "snap/chromium",
    "Firefox (snap)": "snap/firefox",
}


@dataclass(frozen=True)
class Location:
    """One browser's directory of host manifests."""

    browser: str
    directory: Path
    firefox: bool = False

    @property
    def manifest(self) -> Path:
        return self.directory / f"{identity.HOST_NAME}.json"


def locations(chromium_dirs: list[Path] | None = None, home: Path | None = None) -> list[Location]:
    """Chrome's and Chromium's per-user locations (under ``$XDG_CONFIG_HOME``, as they keep
    their profiles), Firefox's, and for each ``--chromium DIR`` the one of the Chromium-family
    browser whose user-data directory is DIR."""
    config = home / ".config" if home else Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config")
    config, home = config.expanduser(), home or Path.home()
    found = [
        Location("Google Chrome", config / "google-chrome/NativeMessagingHosts"),
        Location("Chromium", config / "chromium/NativeMessagingHosts"),
        Location("Firefox", home / ".mozilla/native-messaging-hosts", firefox=True),
    ]
    for directory in chromium_dirs or ():
        found.append(
            Location(f"Chromium ({directory})", directory.absolute() / "NativeMessagingHosts")
        )
    return found


def sandboxed_browsers(home: Path | None = None) -> list[str]:
    """Flatpak and snap browsers of this user (they cannot start the host)."""
    home = home or Path.home()
    return [name for name, path in SANDBOXED.items() if (home / path).is_dir()]


def host_executable() -> Path:
    """The ``mncd-browser-host`` installed with this mncd (beside its Python, or on PATH)."""
    beside = Path(sys.executable).with_name(HOST_COMMAND)
    if beside.is_file():
        return beside.absolute()
    found = shutil.which(HOST_COMMAND)
    if found is None:
        raise FileNotFoundError(HOST_COMMAND)
    return Path(found).absolute()


def manifest_for(location: Location, host: Path) -> dict:
    manifest = {"name": identity.HOST_NAME, "description": DESCRIPTION, "path": str(host),
                "type": "stdio"}  # fmt: skip
    if location.firefox:
        manifest["allowed_extensions"] = [identity.firefox_addon_id()]
    else:
        manifest["allowed_origins"] = [identity.chromium_origin()]
    return manifest


def read_manifest(path: Path) -> dict | None:
    """The manifest at ``path`` when it is ours (written by mncctl), else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("description") == DESCRIPTION:
        return data
    return None


class NotOurs(Exception):
    """A manifest of the host's name that mncctl did not write."""


def write_manifest(location: Location, host: Path) -> Path:
    path = location.manifest
    if path.exists() and read_manifest(path) is None:
        raise NotOurs(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest_for(location, host), indent=2, ensure_ascii=False) + "\n"
    write_atomically(path, text.encode("utf-8"))
    return path


def remove_manifest(location: Location) -> bool:
    path = location.manifest
    if not path.exists():
        return False
    if read_manifest(path) is None:
        raise NotOurs(str(path))
    path.unlink()
    return True


def problem(location: Location) -> str | None:
    """Why the host manifest at ``location`` does not work (None: it does); "missing" when
    there is none."""
    if not location.manifest.exists():
        return "missing"
    data = read_manifest(location.manifest)
    if data is None:
        return "not-ours"
    host = Path(str(data.get("path", "")))
    if not (host.is_file() and os.access(host, os.X_OK)):
        return "no-host"
    expected = manifest_for(location, host)
    key = "allowed_extensions" if location.firefox else "allowed_origins"
    if data.get(key) != expected[key] or data.get("name") != identity.HOST_NAME:
        return "stale"
    return None


def extension_home(home: Path | None = None) -> Path:
    data = Path(os.environ.get("XDG_DATA_HOME") or (home or Path.home()) / ".local/share")
    return data / "mncd" / "browser"


def install_extension(home: Path | None = None) -> tuple[Path, Path]:
    """The extension as a folder to load (Chromium family: "Load unpacked"; Firefox: a
    temporary add-on) and packed as an ``.xpi`` (Firefox ESR or Developer Edition with
    unsigned add-ons allowed)."""
    target = extension_home(home)
    folder = target / "extension"
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=".extension."))
    try:
        for source in sorted(identity.EXTENSION_DIR.iterdir()):
            if source.is_file():
                shutil.copyfile(source, staging / source.name)
        old = target / ".extension.old"
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    packed = target / "mncd-browser-bridge.xpi"
    fd, temporary = tempfile.mkstemp(dir=target, prefix=".xpi.")
    os.close(fd)
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(folder.iterdir()):
            archive.write(source, source.name)
    os.chmod(temporary, 0o644)
    os.replace(temporary, packed)
    return folder, packed


def remove_extension(home: Path | None = None) -> bool:
    target = extension_home(home)
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


# -- the command ---------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "browser",
        _("let government sites (マイナポータル, e-Tax) use the card through mncd (unofficial)"),
        _("Install the browser bridge: host manifests for Chrome, Chromium and Firefox, and the "
          "extension to load. The PIN is asked by mncd's own dialog, never by the browser."),
        "mncctl browser install", "mncctl browser install --chromium ~/.config/chromium-work",
        "mncctl browser status",
    )  # fmt: skip
    actions = command.add_subparsers(dest="action", required=True, metavar=_("ACTION"))
    for name, text, func in (
        ("install", _("write the host manifests and the extension's files"), install),
        ("uninstall", _("remove the host manifests and the extension's files"), uninstall),
        ("status", _("show where the bridge is installed and whether it can work"), status),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--chromium", action="append", type=Path, metavar="DIR", default=None,
            help=_("also the Chromium-family browser whose user-data directory is DIR "
                   "(repeatable)"),
        )  # fmt: skip
        action.set_defaults(func=func)


PROBLEMS = {
    "missing": N_("not installed"),
    "not-ours": N_("a manifest of that name not written by mncctl"),
    "no-host": N_("the host program it names is missing: run mncctl browser install again"),
    "stale": N_("written for another extension id: run mncctl browser install again"),
}


def install(args: argparse.Namespace) -> int:
    try:
        host = host_executable()
    except FileNotFoundError:
        raise SetupError(
            _("{command} is not installed beside mncctl: reinstall mncd").format(
                command=HOST_COMMAND
            )
        ) from None
    for location in locations(args.chromium):
        try:
            path = write_manifest(location, host)
        except NotOurs:
            raise SetupError(
                _("{path} exists and was not written by mncctl; not touched").format(
                    path=location.manifest
                )
            ) from None
        print(_("{browser}: host manifest {path}").format(browser=location.browser, path=path))
    folder, packed = install_extension()
    print(_("Extension folder (Chromium, Chrome: chrome://extensions, Developer mode, "
            "Load unpacked): {path}").format(path=folder))  # fmt: skip
    print(_("Extension file (Firefox ESR or Developer Edition): {path}").format(path=packed))
    _say_sandboxed()
    return ExitCode.OK


def uninstall(args: argparse.Namespace) -> int:
    for location in locations(args.chromium):
        try:
            removed = remove_manifest(location)
        except NotOurs:
            raise SetupError(
                _("{path} was not written by mncctl; not removed").format(path=location.manifest)
            ) from None
        if removed:
            print(_("removed {path}").format(path=location.manifest))
    if remove_extension():
        print(_("removed {path}").format(path=extension_home()))
    return ExitCode.OK


def status(args: argparse.Namespace) -> int:
    working = 0
    for location in locations(args.chromium):
        found = problem(location)
        if found is None:
            working += 1
            print(_("{browser}: ok ({path})").format(
                browser=location.browser, path=location.manifest))  # fmt: skip
        else:
            print(_("{browser}: {problem}").format(
                browser=location.browser, problem=_(PROBLEMS[found])))  # fmt: skip
    folder = extension_home() / "extension"
    if folder.is_dir():
        print(_("Extension folder: {path}").format(path=folder))
    else:
        print(_("Extension folder: not installed (mncctl browser install)"))
    ids = {"chromium": identity.chromium_extension_id(), "firefox": identity.firefox_addon_id()}
    print(_("Extension id: {chromium} (Chromium family), {firefox} (Firefox)").format(**ids))
    _say_sandboxed()
    return ExitCode.OK if working else ExitCode.FAILED


def _say_sandboxed() -> None:
    for browser in sandboxed_browsers():
        print(_("{browser}: sandboxed browsers cannot start mncd-browser-host; use the "
                "browser of your distribution (a .deb) for the government sites").format(
                    browser=browser))  # fmt: skip
