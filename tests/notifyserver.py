"""A real notification server for tests and screenshots: dunst under Xvfb on a private bus.

Needs the Debian packages ``dunst``, ``xvfb`` and, for :meth:`NotifyServer.screenshot`,
``imagemagick``; ``fonts-noto-cjk`` renders Japanese text and ``adwaita-icon-theme`` provides
the icons. Written against dunst 1.9.0.

How to observe what dunst shows (dunst 1.9.0):

* ``dunstctl history`` (``org.dunstproject.cmd0.NotificationListHistory``) lists only
  notifications that were *closed* (expired, dismissed, ``close-all``), newest first, with
  ``id``, ``appname``, ``summary``, ``body`` (as sent), ``message`` (the rendered Pango text),
  ``category``, ``icon_path``, ``timeout``, ... -- but no urgency. Notifications on screen are
  not in it. :meth:`NotifyServer.shown` therefore runs ``dunstctl close-all`` first, then reads
  the history.
* ``dunstctl count displayed`` / ``waiting`` count the live ones (:meth:`live_count`).
* A notification sent with ``replaces_id`` is updated in place: it keeps its id, the live count
  does not grow, and after closing only its latest content is in the history.
* ``dunst -print`` writes every notification it receives to stdout, urgency, actions and
  ``desktop_entry`` included; :meth:`received` parses that log.

The rig's dunstrc keeps everything on screen until closed (all timeouts 0), keeps 100 entries
of history, does not stack duplicates, and runs no scripts, dmenu or browser (so nothing plays
a sound or opens a window). Named icons are looked up in Adwaita's and hicolor's 48x48 and
scalable folders (``icon_path``): dunst 1.9's recursive theme lookup misses Adwaita's icons.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import busstack
from busstack import unwrap, wait_for

BUS_NAME = "org.freedesktop.Notifications"
FONT = "Noto Sans CJK JP 11"
ICON_DIRS = [
    f"/usr/share/icons/{theme}/{size}/{context}"
    for theme in ("Adwaita", "hicolor")
    for size in ("48x48", "scalable")
    for context in ("legacy", "status", "devices", "apps", "actions")
]

DUNSTRC = """\
[global]
    monitor = 0
    follow = none
    width = {width}
    height = 300
    origin = top-right
    offset = 16x16
    notification_limit = 0
    indicate_hidden = yes
    padding = 12
    horizontal_padding = 12
    text_icon_padding = 12
    frame_width = 2
    frame_color = "#8fa1b3"
    separator_height = 2
    separator_color = frame
    gap_size = 6
    sort = yes
    font = {font}
    markup = full
    format = "<b>%s</b>\\n%b"
    alignment = left
    vertical_alignment = center
    word_wrap = yes
    ellipsize = end
    ignore_newline = no
    show_age_threshold = -1
    stack_duplicates = false
    show_indicators = no
    icon_position = left
    # dunst 1.9's theme lookup does not find Adwaita's legacy icons; search plain folders.
    enable_recursive_icon_lookup = false
    icon_path = {icon_path}
    min_icon_size = 32
    max_icon_size = 48
    sticky_history = yes
    history_length = 100
    idle_threshold = 0
    dmenu = /bin/false
    browser = /bin/false
    always_run_script = false
    title = Dunst
    class = Dunst
    corner_radius = 6
    mouse_left_click = do_action, close_current
    mouse_middle_click = close_current
    mouse_right_click = close_all

[urgency_low]
    background = "#2b303b"
    foreground = "#c0c5ce"
    timeout = 0

[urgency_normal]
    background = "#2b303b"
    foreground = "#ffffff"
    timeout = 0

[urgency_critical]
    background = "#900000"
    foreground = "#ffffff"
    frame_color = "#ff5555"
    timeout = 0
"""


def name_has_owner(address: str, name: str = BUS_NAME) -> bool:
    return busstack.name_has_owner(address, name)


def parse_print_log(text: str) -> list[dict[str, str]]:
    """The notifications in ``dunst -print`` output: one dict of raw field texts each.

    Quoted values lose their quotes and may span lines; ``actions`` is a JSON-like object.
    """
    notices: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    lines = iter(text.splitlines())
    for line in lines:
        if line == "{":
            current = {}
        elif line == "}" and current is not None:
            notices.append(current)
            current = None
        elif current is not None and (m := re.match(r"^\t([a-z_ ]+): ?(.*)$", line)):
            key, value = m.group(1), m.group(2)
            if value.startswith("'"):
                while not (len(value) > 1 and value.endswith("'")):
                    value += "\n" + next(lines)
                value = value[1:-1]
            elif value == "{":
                while not value.endswith("}"):
                    value += "\n" + next(lines).strip()
            current[key] = value
    return notices


class NotifyServer:
    """Xvfb on a free display, and dunst on it serving ``org.freedesktop.Notifications``."""

    def __init__(
        self,
        directory: Path,
        bus_address: str,
        *,
        font: str = FONT,
        width: int = 420,
        screen: str = "1024x768",
    ) -> None:
        self.dir = directory
        self.bus_address = bus_address
        self.screen = screen
        self.config = directory / "dunstrc"
        self.config.write_text(
            DUNSTRC.format(font=font, width=width, icon_path=":".join(ICON_DIRS))
        )
        self.print_log = directory / "dunst-print.log"
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.dunst: subprocess.Popen[bytes] | None = None
        self.display = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "NOTIFY_SOCKET")}
        env.update(
            DISPLAY=self.display,
            DBUS_SESSION_BUS_ADDRESS=self.bus_address,
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_DATA_HOME=str(self.dir / "data"),
        )
        return env

    def start(self) -> NotifyServer:
        """Start Xvfb (once) and dunst; return when dunst owns the notifications name."""
        if self.xvfb is None:
            self._start_xvfb()
        if self.dunst is None or self.dunst.poll() is not None:
            self.dunst = subprocess.Popen(
                ["dunst", "-config", str(self.config), "-print"],
                env=self.env,
                stdout=self.print_log.open("ab"),
                stderr=(self.dir / "dunst.log").open("ab"),
            )
            wait_for(self._dunst_ready, "dunst owning org.freedesktop.Notifications")
        return self

    def _start_xvfb(self) -> None:
        # -displayfd: Xvfb picks a free display number and writes it once it accepts clients.
        read_end, write_end = os.pipe()
        try:
            self.xvfb = subprocess.Popen(
                ["Xvfb", "-displayfd", str(write_end), "-screen", "0", f"{self.screen}x24",
                 "-nolisten", "tcp", "-br", "-noreset"],
                pass_fds=[write_end],
                stdout=subprocess.DEVNULL,
                stderr=(self.dir / "xvfb.log").open("ab"),
            )  # fmt: skip
            os.close(write_end)
            write_end = -1
            number = b""
            with os.fdopen(read_end, "rb") as pipe:
                read_end = -1
                number = pipe.readline().strip()
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        if not number.isdigit():
            self.stop()
            raise RuntimeError("Xvfb did not start; see xvfb.log")
        self.display = f":{number.decode()}"

    def _dunst_ready(self) -> bool:
        if self.dunst is not None and self.dunst.poll() is not None:
            raise RuntimeError("dunst exited: " + (self.dir / "dunst.log").read_text())
        return name_has_owner(self.bus_address)

    def stop_dunst(self) -> None:
        """Stop dunst only (the display stays), e.g. to restart the server."""
        dunst, self.dunst = self.dunst, None
        if dunst is not None and dunst.poll() is None:
            dunst.terminate()
            dunst.wait(timeout=10)
        if dunst is not None:
            wait_for(lambda: not name_has_owner(self.bus_address), "dunst leaving the bus")

    def stop(self) -> None:
        self.stop_dunst()
        xvfb, self.xvfb = self.xvfb, None
        if xvfb is not None and xvfb.poll() is None:
            xvfb.terminate()
            xvfb.wait(timeout=10)

    def __enter__(self) -> NotifyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dunstctl(self, *args: str) -> str:
        result = subprocess.run(
            ["dunstctl", *args], env=self.env, capture_output=True, text=True, timeout=15
        )
        if result.returncode != 0:
            raise RuntimeError(f"dunstctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def history(self) -> list[dict[str, Any]]:
        """Closed notifications, newest first: id, appname, summary, body, message, category..."""
        data = json.loads(self.dunstctl("history"))["data"]
        return [unwrap(entry) for entry in data[0]]

    def live_count(self) -> int:
        """Notifications on screen or waiting to be shown."""
        return sum(int(self.dunstctl("count", which)) for which in ("displayed", "waiting"))

    def close_all(self) -> None:
        self.dunstctl("close-all")

    def shown(self) -> list[dict[str, Any]]:
        """Everything dunst has shown so far, newest first (closes what is on screen)."""
        self.close_all()
        return self.history()

    def action(self, position: int = 0) -> None:
        """Invoke the action of the displayed notification at ``position`` (0 = top).

        dunst invokes the "default" action, or the only action if there is just one; with more
        it would open dmenu (disabled here).
        """
        self.dunstctl("action", str(position))

    def received(self) -> list[dict[str, str]]:
        """Every Notify dunst received, oldest first, from its ``-print`` log."""
        return parse_print_log(self.print_log.read_text(errors="replace"))

    def screenshot(self, path: Path, trim: bool = True) -> None:
        """Grab the X screen to a PNG (imagemagick); ``trim`` crops to the notifications."""
        if shutil.which("import") is None:
            raise RuntimeError("screenshots need imagemagick (apt-get install imagemagick)")
        raw = self.dir / "screen.png"
        subprocess.run(["import", "-window", "root", str(raw)], env=self.env, check=True)
        if trim:
            subprocess.run(
                ["convert", str(raw), "-trim", "+repage", "-bordercolor", "black",
                 "-border", "12", str(path)],
                check=True,
            )  # fmt: skip
        else:
            shutil.copyfile(raw, path)
