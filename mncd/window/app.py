"""``mncd-window``: the desktop application (GTK 4 + libadwaita), id ``io.github.mncd.Window``.

D-Bus activatable: ``org.freedesktop.Application`` ``Activate`` shows the window, ``Open`` (a
PDF from a file manager's "Sign with My Number Card") opens the sign page with the file, and
``ActivateAction`` runs ``show`` (a matter: the daemon's notices name one), ``verify`` (a PDF's
path) or ``renewal-info``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from mncd.api import WINDOW_APP_ID, WINDOW_RENEWAL_ACTION, WINDOW_SHOW_ACTION
from mncd.i18n import gettext as _

try:
    import gi

    gi.require_version("Gtk", "4.0")
    gi.require_version("Adw", "1")
    from gi.repository import Adw, Gio, GLib
except (ImportError, ValueError) as exc:  # no PyGObject, or no GTK 4 / libadwaita typelibs
    raise SystemExit(
        _(
            "mncd-window: the window needs PyGObject, GTK 4 and libadwaita: sudo apt install "
            "python3-gi python3-cairo gir1.2-gtk-4.0 gir1.2-adw-1 (./scripts/setup installs "
            "them): {error}"
        ).format(error=exc)
    ) from exc

from mncd.window.loop import AsyncLoop  # after the check above: it needs gi

log = logging.getLogger(__name__)

PROGRAM = "mncd-window"
#: Test hook: a directory; the ``screenshot`` action then saves ``NAME.png`` of the window there.
SCREENSHOT_VARIABLE = "MNCD_WINDOW_SCREENSHOTS"


class WindowApplication(Adw.Application):
    def __init__(self) -> None:
        super().__init__(application_id=WINDOW_APP_ID,
                         flags=Gio.ApplicationFlags.HANDLES_OPEN)  # fmt: skip
        self.main: Any = None
        #: The asyncio loop of the window's talk with the daemon, in a thread of its own.
        self.loop = AsyncLoop()
        self.watch: Any = None

    def do_startup(self) -> None:
        Adw.Application.do_startup(self)
        self.loop.start()
        GLib.set_application_name(_("My Number Card"))
        show = Gio.SimpleAction.new(WINDOW_SHOW_ACTION, GLib.VariantType.new("s"))
        show.connect("activate", lambda _a, value: self.show(value.get_string()))
        self.add_action(show)
        verify = Gio.SimpleAction.new("verify", GLib.VariantType.new("s"))
        verify.connect("activate", lambda _a, value: self.verify(Path(value.get_string())))
        self.add_action(verify)
        renewal = Gio.SimpleAction.new(WINDOW_RENEWAL_ACTION, None)
        renewal.connect("activate", lambda *_args: self._renewal_info())
        self.add_action(renewal)
        quit_action = Gio.SimpleAction.new("quit", None)
        quit_action.connect("activate", lambda *_args: self.quit())
        self.add_action(quit_action)
        self.set_accels_for_action("app.quit", ["<Control>q"])
        self.set_accels_for_action("window.close", ["<Control>w"])
        shots = os.environ.get(SCREENSHOT_VARIABLE)
        if shots:
            shot = Gio.SimpleAction.new("screenshot", GLib.VariantType.new("s"))
            shot.connect(
                "activate",
                lambda _a, value: self.window().screenshot(
                    Path(shots) / f"{Path(value.get_string()).name}.png"
                ),
            )
            self.add_action(shot)

    def window(self) -> Any:
        """The window, made on first use."""
        if self.main is None:
            from mncd.window.window import MainWindow

            self.main = MainWindow(self, self.loop)
            self.watch = self.main.watch  # closed at shutdown, also when the window is gone
            self.main.window.connect("destroy", lambda _w: setattr(self, "main", None))
            self.main.start()
        return self.main

    def do_shutdown(self) -> None:
        """Close the client connections on the asyncio thread, then end that thread."""
        closing = [] if self.watch is None else [self.watch.close]
        self.loop.stop(*closing)
        Adw.Application.do_shutdown(self)

    def do_activate(self) -> None:
        self.window().window.present()

    def do_open(self, files: list[Gio.File], _count: int, _hint: str) -> None:
        main = self.window()
        paths = [Path(f.get_path()) for f in files if f.get_path()]
        if paths:
            main.open_to_sign(paths[0])
        main.window.present()

    def verify(self, path: Path) -> None:
        """The documents page verifying ``path``."""
        main = self.window()
        main.show_matter("verify-pdf")
        main.documents.verify(path)

    def show(self, matter: str) -> None:
        self.window().show_matter(matter)

    def _renewal_info(self) -> None:
        from mncd.window.window import open_renewal_info

        if self.main is not None:
            self.main.renewal_info()
            return
        try:  # a notice's link started the application for it alone: no window to show
            open_renewal_info()
        except GLib.Error as exc:
            log.warning("cannot open J-LIS's renewal page: %s", exc.message)


def main(argv: list[str] | None = None) -> int:
    """``mncd-window [PDF]``."""
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("MNCD_WINDOW_DEBUG") else logging.WARNING,
        format="mncd-window: %(message)s",
    )
    GLib.set_prgname(PROGRAM)  # its name for AT-SPI and the window manager, however started
    app = WindowApplication()
    return app.run(sys.argv if argv is None else argv)
