"""The desktop for the window's tests: Xvfb and dunst on a private session bus that activates
the AT-SPI bus and the window (``io.github.mncd.Window``), mncd on the virtual card with a
scripted pinentry, the window itself, and an AT-SPI reader (Debian's python3-pyatspi, run with
the system Python) that reads and presses what a screen reader would."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from busstack import Daemon, PrivateBus, wait_for
from notifyserver import NotifyServer
from pinentry_script import ScriptedPinentry, config_with

from mncd.api import WINDOW_APP_ID, WINDOW_OBJECT_PATH
from mncd.window.app import PROGRAM

READER = Path(__file__).with_name("atspi_reader.py")
SYSTEM_PYTHON = "/usr/bin/python3"
A11Y_SERVICE = Path("/usr/share/dbus-1/services/org.a11y.Bus.service")
APPLICATION = "org.freedesktop.Application"
LANGUAGES = {"ja": "C.UTF-8", "en": "C.UTF-8"}  # LANGUAGE chooses the catalog


class WindowStack:
    """Everything the window's tests need, started once per module."""

    def __init__(self, directory: Path, sandbox_env: dict[str, str]) -> None:
        self.dir = directory
        self.sandbox_env = sandbox_env
        self.services = directory / "services"
        self.services.mkdir(parents=True)
        shutil.copy(A11Y_SERVICE, self.services)
        self.shots = directory / "screenshots"
        self.home = directory / "home"
        (self.home / "data").mkdir(parents=True)
        self.write_activation_file()
        self.opened_uris = directory / "opened-uris.txt"
        self.write_browser()
        self.bus = PrivateBus(directory, service_dirs=[self.services])
        self.server = NotifyServer(directory, self.bus.address).start()
        self.display = self.server.display
        self.pinentry = ScriptedPinentry(directory / "pinentry", [])
        self.language = "ja"
        self.update_activation_environment()
        env = {
            **sandbox_env,
            **config_with(directory, self.pinentry),
            "DISPLAY": self.display,
            "LANG": "C.UTF-8",
            "LANGUAGE": "",
        }
        self.daemon = Daemon(self.bus, env, directory / "state").start()
        self.window: subprocess.Popen[bytes] | None = None

    def answer(self, answers: list[object]) -> None:
        """What the scripted pinentry answers from now on (see scripted_pinentry.py)."""
        self.pinentry.script.write_text(json.dumps(answers))
        Path(str(self.pinentry.script) + ".used").unlink(missing_ok=True)

    # -- the environment the bus starts the window and the AT-SPI bus with ----------------------

    def write_activation_file(self) -> None:
        command = shlex.join([sys.executable, "-m", "mncd.window", "--gapplication-service"])
        (self.services / f"{WINDOW_APP_ID}.service").write_text(
            f"[D-BUS Service]\nName={WINDOW_APP_ID}\nExec={command}\n"
        )

    def write_browser(self) -> None:
        """A stand-in browser: the default https handler of the stack's user writes the address
        it was asked to open to :attr:`opened_uris`."""
        applications = self.home / "data" / "applications"
        applications.mkdir(parents=True, exist_ok=True)
        record = shlex.quote(str(self.opened_uris))
        (applications / "record-uri.desktop").write_text(
            "[Desktop Entry]\nType=Application\nName=Recorder\n"
            f"Exec=sh -c 'echo \"$1\" >> {record}' sh %u\n"
            "MimeType=x-scheme-handler/https;x-scheme-handler/http;\n"
        )
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "mimeapps.list").write_text(
            "[Default Applications]\nx-scheme-handler/https=record-uri.desktop\n"
            "x-scheme-handler/http=record-uri.desktop\n"
        )

    def window_env(self, language: str | None = None) -> dict[str, str]:
        language = language or self.language
        return {
            **self.sandbox_env,  # the doctor's checks look at pcscd and the card themselves
            "DISPLAY": self.display,
            "DBUS_SESSION_BUS_ADDRESS": self.bus.address,
            "LANGUAGE": language,
            "LANG": LANGUAGES[language],
            "LC_ALL": "",
            "GSK_RENDERER": "cairo",  # no GL under Xvfb; also what the screenshots render with
            "GTK_A11Y": "atspi",
            "GSETTINGS_BACKEND": "memory",  # no dconf on the private bus
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "HOME": str(self.home),
            "MNCD_WINDOW_SCREENSHOTS": str(self.shots),
            "PYTHONPATH": os.pathsep.join(sys.path),
        }

    def update_activation_environment(self, language: str | None = None) -> None:
        """What the bus gives the programs it starts (the window, the AT-SPI bus)."""
        if language:
            self.language = language
        pairs = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in self.window_env().items())
        subprocess.run(
            ["gdbus", "call", "--address", self.bus.address, "--dest", "org.freedesktop.DBus",
             "--object-path", "/org/freedesktop/DBus", "--method",
             "org.freedesktop.DBus.UpdateActivationEnvironment", "{" + pairs + "}"],
            check=True, capture_output=True, timeout=15,
        )  # fmt: skip

    # -- the window -------------------------------------------------------------------------------

    def start_window(self, language: str, *args: str) -> None:
        """Start ``mncd-window`` (``args``: a PDF) in ``language``; wait until it shows."""
        self.stop_window()
        self.update_activation_environment(language)
        env = {**os.environ, **self.window_env(language)}
        env.pop("WAYLAND_DISPLAY", None)
        self.window = subprocess.Popen(
            [sys.executable, "-m", "mncd.window", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / f"window-{language}.log").open("ab"),
        )
        self.wait_for_window()

    def wait_for_window(self) -> None:
        wait_for(lambda: self.application_name() is not None, "the window on AT-SPI", 30)

    def window_running(self) -> bool:
        from busstack import name_has_owner

        return name_has_owner(self.bus.address, WINDOW_APP_ID)

    def stop_window(self) -> None:
        """Quit the window (its own quit action), however it was started."""
        if self.window_running():
            self.application("ActivateAction", "'quit'", "@av []", "{}")
            wait_for(lambda: not self.window_running(), "the window to quit")
        process, self.window = self.window, None
        if process is not None:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # Quit closes its connections on the asyncio thread and joins it: a clean exit.
            assert process.returncode == 0, f"the window ended with {process.returncode}"

    def application(self, method: str, *args: str) -> str:
        """Call ``org.freedesktop.Application`` on the window (D-Bus activation if needed)."""
        result = subprocess.run(
            ["gdbus", "call", "--address", self.bus.address, "--dest", WINDOW_APP_ID,
             "--object-path", WINDOW_OBJECT_PATH, "--timeout", "60", "--method",
             f"{APPLICATION}.{method}", *args],
            capture_output=True, text=True, timeout=70,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    def screenshot(self, name: str) -> Path:
        self.application("ActivateAction", "'screenshot'", f"[<'{name}'>]", "{}")
        path = self.shots / f"{name}.png"
        wait_for(path.exists, f"screenshot {name}")
        return path

    # -- AT-SPI -----------------------------------------------------------------------------------

    def reader(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DISPLAY": self.display,
            "DBUS_SESSION_BUS_ADDRESS": self.bus.address,
            "HOME": str(self.home),
        }
        return subprocess.run(
            [SYSTEM_PYTHON, str(READER), *args], env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    def application_name(self) -> str | None:
        """The window's name on the AT-SPI desktop, once it is there."""
        return PROGRAM if self.reader("dump", PROGRAM).returncode == 0 else None

    def tree(self) -> list[dict[str, Any]]:
        """The window's accessible tree. While GTK rebuilds a page after a job, AT-SPI's desktop
        may not list the window for a moment: it is asked again then, while the window runs."""
        dump: subprocess.CompletedProcess[str] | None = None

        def listed() -> bool:
            nonlocal dump
            assert self.window is None or self.window.poll() is None, "the window ended"
            dump = self.reader("dump", PROGRAM)
            return dump.returncode == 0

        wait_for(listed, "the window on the AT-SPI desktop", 20)
        assert dump is not None
        return json.loads(dump.stdout)

    def texts(self) -> str:
        """Every name and text in the window's tree, one a line (GTK 4.8 does not tell AT-SPI
        which nodes are showing; a page not in view is in the tree too)."""
        lines = []
        for node in self.tree():
            for value in (node["name"], node["text"]):
                if value and value not in lines[-2:]:
                    lines.append(value)
        return "\n".join(lines)

    def wait_for_text(self, *wanted: str, timeout: float = 30.0) -> str:
        """The window's text once it holds every one of ``wanted``."""
        seen = ""

        def holds() -> bool:
            nonlocal seen
            seen = self.texts()
            return all(text in seen for text in wanted)

        try:
            wait_for(holds, f"the window to show {wanted}", timeout)
        except TimeoutError:
            missing = [text for text in wanted if text not in seen]
            raise AssertionError(f"not in the window: {missing}\n--- it shows:\n{seen}") from None
        return seen

    def focused(self) -> list[str]:
        """The names of the nodes that have the keyboard focus."""
        return [node["name"] for node in self.tree() if node["focused"]]

    def click(self, name: str) -> None:
        app = self.application_name()
        assert app is not None
        result = self.reader("click", app, name)
        assert result.returncode == 0, f"no button named {name!r}: {result.stderr}"

    # -- the end ----------------------------------------------------------------------------------

    def stop(self) -> None:
        try:
            self.stop_window()
        finally:
            a11y = self._a11y_pid()
            self.daemon.stop()
            self.server.stop()
            self.bus.stop()
            if a11y is not None:
                end_process(a11y)

    def _a11y_pid(self) -> int | None:
        result = subprocess.run(
            ["busctl", f"--address={self.bus.address}", "--json=short", "call",
             "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
             "GetConnectionUnixProcessID", "s", "org.a11y.Bus"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return json.loads(result.stdout)["data"][0] if result.returncode == 0 else None


def end_process(pid: int) -> None:
    """End the AT-SPI bus launcher this stack's bus started (and wait a moment for it)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
