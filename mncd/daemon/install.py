"""``mncd --install-user-service`` / ``--uninstall-user-service``: the systemd user unit and the
D-Bus activation file, both running this installation's ``mncd``; and, when this installation
has the window (``mncd-window`` beside ``mncd``), its ``.desktop`` entry, icon and D-Bus
activation file, so the menu, file managers ("open PDFs with") and mncd's notices can start it.

The shipped files (``systemd/mncd.service``, ``dbus/io.github.mncd.MyNumberCard1.service``; in the
package under ``mncd/daemon/service-files/``) are copied with only their ``ExecStart=`` / ``Exec=``
line changed, so the installed service keeps working however mncd was installed (a venv,
``pipx install .``) and wherever the source checkout is moved.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mncd.api import BUS_NAME, WINDOW_APP_ID
from mncd.core.state import atomic_write
from mncd.i18n import gettext as _

__all__ = ["InstallError", "ServicePaths", "find_executable", "install", "uninstall"]

UNIT = "mncd.service"
ACTIVATION = f"{BUS_NAME}.service"
WINDOW_COMMAND = "mncd-window"
WINDOW_DESKTOP = f"{WINDOW_APP_ID}.desktop"
WINDOW_ACTIVATION = f"{WINDOW_APP_ID}.service"
WINDOW_ICON = f"{WINDOW_APP_ID}.svg"
#: Characters systemd or dbus-daemon would expand or split in the path (%, $, quotes, \\, `).
UNSAFE = re.compile(r"[%$\"'\\`\x00-\x1f\x7f]")


class InstallError(Exception):
    """The service cannot be installed as asked; the text says why."""


@dataclass(frozen=True)
class ServicePaths:
    """Where a user's systemd unit and D-Bus activation file go."""

    unit: Path
    activation: Path

    @classmethod
    def for_user(cls, env: Mapping[str, str] = os.environ) -> ServicePaths:
        """``$XDG_CONFIG_HOME/systemd/user`` and ``$XDG_DATA_HOME/dbus-1/services``."""
        home = Path(env.get("HOME") or Path.home())
        config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        return cls(config / "systemd" / "user" / UNIT, data / "dbus-1" / "services" / ACTIVATION)


@dataclass(frozen=True)
class WindowPaths:
    """Where the window's desktop entry, icon and D-Bus activation file go for a user."""

    desktop: Path
    icon: Path
    activation: Path

    @classmethod
    def for_user(cls, env: Mapping[str, str] = os.environ) -> WindowPaths:
        """Under ``$XDG_DATA_HOME``: ``applications/``, ``icons/hicolor/scalable/apps/``,
        ``dbus-1/services/``."""
        home = Path(env.get("HOME") or Path.home())
        data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        return cls(
            data / "applications" / WINDOW_DESKTOP,
            data / "icons" / "hicolor" / "scalable" / "apps" / WINDOW_ICON,
            data / "dbus-1" / "services" / WINDOW_ACTIVATION,
        )

    def all(self) -> tuple[Path, ...]:
        return (self.desktop, self.icon, self.activation)


def install_window(
    mncd: Path, paths: WindowPaths | None = None, say: Callable[[str], None] = print
) -> WindowPaths | None:
    """The window's files, when ``mncd-window`` is beside ``mncd`` (else nothing)."""
    window = mncd.parent / WINDOW_COMMAND
    if not _is_executable(window):
        return None
    value = exec_value(window)
    paths = paths or WindowPaths.for_user()
    _write(paths.desktop, render(shipped(WINDOW_DESKTOP), "Exec", f"{value} %F"))
    _write(paths.icon, shipped(WINDOW_ICON))
    _write(paths.activation, render(shipped(WINDOW_ACTIVATION), "Exec",
                                    f"{value} --gapplication-service"))  # fmt: skip
    _run("update-desktop-database", "-q", str(paths.desktop.parent))  # "open PDFs with" menus
    say(f"installed {paths.desktop}, {paths.icon} and {paths.activation}; they run {window}")
    return paths


def find_executable() -> Path:
    """The ``mncd`` command of this installation: the one running, else the one beside this
    Python (a venv's or pipx's ``bin/``)."""
    running = Path(sys.argv[0])
    if running.name == "mncd" and _is_executable(running):
        return Path(os.path.abspath(running))
    beside = Path(sysconfig.get_path("scripts")) / "mncd"
    if _is_executable(beside):
        return beside
    raise InstallError(
        _("cannot tell where the mncd command is; give its path: mncd --install-user-service PATH")
    )


def exec_value(executable: Path) -> str:
    """``executable`` as one word of ``ExecStart=`` and ``Exec=`` (quoted when it has a space)."""
    text = str(executable)
    if UNSAFE.search(text):
        raise InstallError(_("unsupported characters in the path {path}").format(path=text))
    return f'"{text}"' if " " in text else text


def render(template: str, key: str, value: str) -> str:
    """``template`` with the value of every ``key=`` line replaced by ``value``."""
    lines = [
        f"{key}={value}" if line.startswith(f"{key}=") else line for line in template.splitlines()
    ]
    return "\n".join(lines) + "\n"


def shipped(name: str) -> str:
    """The text of a shipped service file (``mncd.service`` or the activation file)."""
    return (resources.files("mncd.daemon") / "service-files" / name).read_text()


def install(
    executable: Path | None = None,
    paths: ServicePaths | None = None,
    say: Callable[[str], None] = print,
    window_paths: WindowPaths | None = None,
) -> ServicePaths:
    """Write the unit and the activation file for ``executable`` (default: this installation's
    ``mncd``) and the window's files (see :func:`install_window`), reload the user manager and
    the bus, and restart a running mncd."""
    executable = Path(os.path.abspath(executable)) if executable else find_executable()
    if not _is_executable(executable):
        raise InstallError(_("{path} is not an executable file").format(path=executable))
    value = exec_value(executable)
    paths = paths or ServicePaths.for_user()
    _write(paths.unit, render(shipped(UNIT), "ExecStart", value))
    _write(paths.activation, render(shipped(ACTIVATION), "Exec", value))
    say(_("Installed {unit} and {activation}; both run {mncd}.").format(
        unit=paths.unit, activation=paths.activation, mncd=executable))  # fmt: skip
    install_window(executable, window_paths, say)
    managed = _have_manager()
    if managed:
        _systemctl("daemon-reload")
        _systemctl("try-restart", UNIT)
    _reload_bus()
    say(advice(managed))
    return paths


def advice(managed: bool) -> str:
    """What works now, for a machine with a systemd user manager running or without one."""
    if managed:
        return _(
            "mncd now starts when a program first uses it (D-Bus activation through systemd). "
            "To start it at login too: systemctl --user enable --now {unit}"
        ).format(unit=UNIT)
    return _(
        "No systemd user manager runs in this session. What works: mncd starts when a program "
        "first uses it (the session bus starts it itself). What does not: starting it at "
        "login, and systemctl --user or journalctl --user for it; these work once you log in to "
        "a desktop session that runs a systemd user manager, with nothing to install again."
    )


def uninstall(
    paths: ServicePaths | None = None,
    say: Callable[[str], None] = print,
    window_paths: WindowPaths | None = None,
) -> None:
    """Stop mncd, disable and remove the unit and the activation file, and the window's files."""
    paths = paths or ServicePaths.for_user()
    for path in (window_paths or WindowPaths.for_user()).all():
        path.unlink(missing_ok=True)
    managed = _have_manager()
    if managed:
        _systemctl("disable", "--now", UNIT)
    for path in (paths.unit, paths.activation, *enable_links(paths.unit)):
        path.unlink(missing_ok=True)
    if managed:
        _systemctl("daemon-reload")
    _stop_unmanaged()
    _reload_bus()
    say(_("Removed {unit} and {activation}; mncd is stopped.").format(
        unit=paths.unit, activation=paths.activation))  # fmt: skip


def enable_links(unit: Path) -> list[Path]:
    """The links ``systemctl --user enable`` made to ``unit`` (``default.target.wants/…``),
    left behind when it cannot disable it (no user manager)."""
    return [
        link
        for link in unit.parent.glob(f"*.wants/{unit.name}")
        if link.is_symlink() and (link.parent / os.readlink(link)).resolve() == unit.resolve()
    ]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (0644, as systemd and dbus-daemon expect)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), mode=0o644)


def _run(*argv: str) -> subprocess.CompletedProcess[str] | None:
    """Run a systemd or D-Bus tool quietly; None when it is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _have_manager() -> bool:
    return _systemctl("show-environment")


def _systemctl(*args: str) -> bool:
    """``systemctl --user ARGS``; False when there is no user manager to talk to."""
    result = _run("systemctl", "--user", "--quiet", *args)
    return result is not None and result.returncode == 0


def _bus(method: str, *args: str) -> str | None:
    """A call to the session bus itself with busctl; its output, None when it failed."""
    result = _run(
        "busctl", "--user", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus", method, *args,
    )  # fmt: skip
    return result.stdout if result is not None and result.returncode == 0 else None


def _reload_bus() -> None:
    """dbus-broker rereads activation files only when asked (dbus-daemon does not mind)."""
    _bus("ReloadConfig")


def _stop_unmanaged() -> None:
    """SIGTERM an mncd that the bus started without systemd (no user manager)."""
    reply = _bus("GetConnectionUnixProcessID", "s", BUS_NAME)  # "u 1234" when owned
    if reply is None or not reply.startswith("u "):
        return
    pid = int(reply.split()[1])
    try:
        if os.stat(f"/proc/{pid}").st_uid == os.getuid():
            os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
