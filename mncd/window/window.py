"""The window: three pages (the card, documents, checks), a bar for the running job, toasts.
It reaches the daemon only through :mod:`mncd.client` and never sees a PIN: the daemon's own
dialog asks for it."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gi.repository import Adw, Gdk, Gio, GLib, Gtk

from mncd import errors
from mncd.api import RENEWAL_INFO_URL
from mncd.cli.errors import error_line
from mncd.cli.text import pin_label
from mncd.client import MyNumberCard
from mncd.client.texts import certificate_title
from mncd.i18n import gettext as _
from mncd.window.backend import SETTLE, Snapshot, StatusWatch
from mncd.window.card_page import CardPage, focus
from mncd.window.checks_page import ChecksPage
from mncd.window.documents_page import DocumentsPage
from mncd.window.jobs import JobBar, with_daemon
from mncd.window.loop import AsyncLoop
from mncd.window.widgets import named

log = logging.getLogger(__name__)

#: Longest text a toast shows whole; longer ones come in a dialog.
TOAST_LENGTH = 40

#: Which page shows each matter a notice or a caller asks for.
MATTERS = {
    "card": "card",
    "auth": "card",
    "sign": "card",
    "pin-auth": "card",
    "pin-sign": "card",
    "pin-card-info": "card",
    "personal-data": "checks",
    "doctor": "checks",
    "sign-pdf": "documents",
    "verify-pdf": "documents",
}


class MainWindow:
    """The application's one window. Its talk with the daemon runs on ``loop``'s asyncio thread;
    what comes back is drawn on GTK's."""

    def __init__(self, app: Adw.Application, loop: AsyncLoop) -> None:
        self.app = app
        self.loop = loop
        self.window = Adw.ApplicationWindow(application=app, default_width=720,
                                            default_height=820)  # fmt: skip
        self.window.set_title(_("My Number Card"))
        self.stack = Adw.ViewStack()
        self.card_page = CardPage(self)
        self.documents = DocumentsPage(self)
        self.checks = ChecksPage(self)
        pages = (
            (self.card_page.widget, "card", _("Card"), "contact-new-symbolic"),
            (self.documents.widget, "documents", _("Documents"), "document-edit-symbolic"),
            (self.checks.widget, "checks", _("Checks"), "emblem-ok-symbolic"),
        )
        for widget, name, title, icon in pages:
            page = self.stack.add_titled(widget, name, title)
            page.set_icon_name(icon)
            named(widget, title)

        header = Adw.HeaderBar()
        switcher = Adw.ViewSwitcherTitle(stack=self.stack, title=_("My Number Card"))
        named(switcher, _("Pages"))
        header.set_title_widget(switcher)
        bottom = Adw.ViewSwitcherBar(stack=self.stack)
        switcher.connect("notify::title-visible",
                         lambda s, _p: bottom.set_reveal(s.get_title_visible()))  # fmt: skip

        self.jobs = JobBar(loop)
        self.toasts = Adw.ToastOverlay()
        self.toasts.set_child(self.stack)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
        box.append(header)
        self.toasts.set_vexpand(True)
        box.append(self.toasts)
        box.append(self.jobs.widget)
        box.append(bottom)
        self.window.set_content(box)

        keys = Gtk.EventControllerKey()
        keys.connect("key-pressed", self._key)
        self.window.add_controller(keys)
        self._add_window_actions()

        #: A matter asked for before the status had come (focused once it is drawn).
        self._pending_matter: str | None = None
        self.watch = StatusWatch(loop.to_gtk(self.card_page_draw))
        self.window.connect("close-request", self._closing)

    # -- live status ------------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.submit(self.watch.start)

    def refresh_soon(self, delay: float = SETTLE) -> None:
        """Read the status again soon (the watch lives on the asyncio thread)."""
        self.loop.call(self.watch.schedule, delay)

    def card_page_draw(self, snapshot: Snapshot) -> None:
        """Draw the new status, keeping the keyboard focus on the same matter."""
        matter = self._pending_matter or self._focused_matter()
        self.card_page.draw(snapshot)
        anchor = self.card_page.anchors.get(matter or "")
        if anchor is not None:
            focus(anchor)
            self._pending_matter = None

    def _focused_matter(self) -> str | None:
        widget = self.window.get_focus()
        while widget is not None:
            for matter, anchor in self.card_page.anchors.items():
                if widget is anchor:
                    return matter
            widget = widget.get_parent()
        return None

    def _closing(self, _window: Any) -> bool:
        self.jobs.stop()
        self.loop.submit(self.watch.close)
        return False

    # -- keyboard -------------------------------------------------------------------------------

    def _add_window_actions(self) -> None:
        page = Gio.SimpleAction.new("page", GLib.VariantType.new("s"))
        page.connect("activate", lambda _a, value: self.show_matter(value.get_string()))
        self.window.add_action(page)
        for index, name in enumerate(("card", "documents", "checks"), 1):
            self.app.set_accels_for_action(f"win.page('{name}')", [f"<Alt>{index}"])
        refresh = Gio.SimpleAction.new("refresh", None)
        refresh.connect("activate", lambda *_args: self.refresh_soon(0))
        self.window.add_action(refresh)
        self.app.set_accels_for_action("win.refresh", ["F5", "<Control>r"])
        open_pdf = Gio.SimpleAction.new("open-pdf", None)
        open_pdf.connect("activate", lambda *_args: self.documents.choose_to_sign())
        self.window.add_action(open_pdf)
        self.app.set_accels_for_action("win.open-pdf", ["<Control>o"])

    def _key(self, _controller: Any, keyval: int, _code: int, _state: Any) -> bool:
        if keyval == Gdk.KEY_Escape and self.jobs.busy:
            self.jobs.stop()
            return True
        return False

    # -- what the notices and file managers open --------------------------------------------------

    def show_matter(self, matter: str) -> None:
        """Show the page of ``matter`` (see :data:`MATTERS`) and move the focus to it."""
        self.stack.set_visible_child_name(MATTERS.get(matter, "card"))
        self.window.present()
        anchor = self.card_page.anchors.get(matter)
        if anchor is not None:
            focus(anchor)
        elif matter in self.card_page.MATTERS:
            self._pending_matter = matter

    def open_to_sign(self, path: Path) -> None:
        self.documents.set_source(path)
        self.show_matter("sign-pdf")

    # -- jobs -------------------------------------------------------------------------------------

    def toast(self, text: str) -> None:
        """Tell ``text``: a toast when it fits in one, else a dialog (a toast cannot wrap)."""
        if len(text) > TOAST_LENGTH:
            self.message(text)
            return
        self.toasts.add_toast(Adw.Toast(title=text.replace("&", "&amp;").replace("<", "&lt;"),
                                        timeout=6))  # fmt: skip

    def message(self, text: str, heading: str | None = None, extra: Any = None) -> None:
        """A dialog saying ``text`` (and showing ``extra``), closed with Close, Enter or
        Escape."""
        dialog = Adw.MessageDialog.new(self.window, heading, text or None)
        if extra is not None:
            dialog.set_extra_child(extra)
        dialog.add_response("close", _("Close"))
        dialog.set_default_response("close")
        dialog.set_close_response("close")
        dialog.present()

    def tell_error(self, exc: BaseException, heading: str = "") -> None:
        """An error in words, with what to do: a toast when the user cancelled, else a dialog."""
        if isinstance(exc, errors.Cancelled):
            self.toast(error_line(exc))
            return
        self.message(error_line(exc), heading or _("It did not work"))

    def run(
        self,
        text: str,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not self.jobs.run(text, work, done, failed or self.tell_error):
            self.toast(_("Another action is under way: wait for it or cancel it."))

    def run_with_daemon(
        self,
        text: str,
        body: Callable[[MyNumberCard], Awaitable[Any]],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """A job on a connection of its own (Cancel closes it, and with it the PIN dialog);
        the status is refreshed afterwards."""

        def finished(result: Any) -> None:
            self.refresh_soon()
            done(result)

        def went_wrong(exc: BaseException) -> None:
            self.refresh_soon()
            (failed or self.tell_error)(exc)

        self.run(text, lambda: with_daemon(body), finished, went_wrong)

    # -- the card's actions -----------------------------------------------------------------------

    def change_pin(self, which: str) -> None:
        from mncd.cli.pin_command import TEXT

        label = pin_label(which)

        def failed(exc: BaseException) -> None:
            if isinstance(exc, errors.PinIncorrect):
                text = TEXT["not-changed"].format(wrong=error_line(exc), label=label)
                self.message(text, _("It did not work"))
            else:
                self.tell_error(exc)

        self.run_with_daemon(
            TEXT["waiting"].format(label=label),
            lambda card: card.change_pin(which),
            lambda _result: self.toast(TEXT["changed"].format(label=label)),
            failed,
        )

    async def _certificate(self, card: MyNumberCard, which: str) -> bytes:
        if which == "sign":
            return await card.get_signing_certificate()
        return await card.get_certificate(which)

    def show_certificate(self, which: str) -> None:
        from mncd.cli.cert import format_details
        from mncd.jpki.details import describe, personal_data

        def done(der: bytes) -> None:
            person = personal_data(der) if which == "sign" else None
            lines = format_details(which, describe(der), person)
            text = Gtk.Label(label="\n".join(lines[1:]), xalign=0, selectable=True, wrap=True)
            text.add_css_class("monospace")
            named(text, "\n".join(lines))
            self.message("", lines[0], text)

        waiting = (
            _("Reading the signing certificate: enter your signing password in the PIN dialog…")
            if which == "sign"
            else _("Reading the certificate…")
        )
        self.run_with_daemon(waiting, lambda card: self._certificate(card, which), done)

    def export_certificate(self, which: str) -> None:
        chooser = Gtk.FileChooserNative.new(
            _("Export the {title}").format(title=certificate_title(which)),
            self.window,
            Gtk.FileChooserAction.SAVE,
            _("Save"),
            _("Cancel"),
        )
        chooser.set_current_name(f"{which}.pem")
        chooser.set_current_folder(Gio.File.new_for_path(GLib.get_home_dir()))

        def answered(dialog: Any, response: int) -> None:
            gfile = dialog.get_file()
            dialog.destroy()
            if response == Gtk.ResponseType.ACCEPT and gfile is not None and gfile.get_path():
                self._export_to(which, Path(gfile.get_path()))

        chooser.connect("response", answered)
        chooser.show()
        self._chooser = chooser

    def _export_to(self, which: str, path: Path) -> None:
        from mncd.cli.cert import TEXT, encode, write_new

        as_der = path.suffix.lower() in (".der", ".cer", ".crt")
        private = which == "sign"

        def done(der: bytes) -> None:
            # The file chooser asked before replacing a file.
            write_new(path, encode(der, as_der=as_der), private=private, replace=True)
            self.toast(
                TEXT["written"].format(
                    title=TEXT["title"][which],
                    path=path,
                    form="DER" if as_der else "PEM",
                    private=TEXT["private"] if private else "",
                )
            )

        def done_safely(der: bytes) -> None:
            try:
                done(der)
            except Exception as exc:  # cannot write there: say so
                self.tell_error(exc)

        self.run_with_daemon(
            _("Reading the certificate…"), lambda card: self._certificate(card, which), done_safely
        )

    def renewal_info(self) -> None:
        try:
            open_renewal_info()
        except GLib.Error as exc:
            self.message(f"{RENEWAL_INFO_URL}\n{exc.message}", _("It did not work"))

    # -- screenshots (tests and docs) -------------------------------------------------------------

    def screenshot(self, path: Path) -> None:
        """The window as it is drawn now, as a PNG."""
        width, height = self.window.get_width(), self.window.get_height()
        paintable = Gtk.WidgetPaintable.new(self.window)
        snapshot = Gtk.Snapshot()
        paintable.snapshot(snapshot, width, height)
        renderer = self.window.get_native().get_renderer()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(snapshot, renderer, path)


def save_png(snapshot: Gtk.Snapshot, renderer: Any, path: Path) -> None:
    """What ``snapshot`` holds, rendered by ``renderer`` and saved as a PNG. PyGObject 3.42
    cannot hold GSK's render nodes (a fundamental type), so the node is passed through GTK's C
    API and never reaches Python."""
    gtk = ctypes.CDLL("libgtk-4.so.1")
    gtk.gtk_snapshot_to_node.restype = ctypes.c_void_p
    gtk.gtk_snapshot_to_node.argtypes = [ctypes.c_void_p]
    gtk.gsk_renderer_render_texture.restype = ctypes.c_void_p
    gtk.gsk_renderer_render_texture.argtypes = [ctypes.c_void_p] * 3
    gtk.gdk_texture_save_to_png.restype = ctypes.c_int
    gtk.gdk_texture_save_to_png.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    gtk.gsk_render_node_unref.argtypes = [ctypes.c_void_p]
    gtk.g_object_unref.argtypes = [ctypes.c_void_p]
    node = gtk.gtk_snapshot_to_node(c_pointer(snapshot))
    if not node:
        raise RuntimeError("the window has not been drawn yet")
    try:
        texture = gtk.gsk_renderer_render_texture(c_pointer(renderer), node, None)
        try:
            if not gtk.gdk_texture_save_to_png(texture, os.fsencode(path)):
                raise OSError(f"cannot write {path}")
        finally:
            gtk.g_object_unref(texture)
    finally:
        gtk.gsk_render_node_unref(node)


def c_pointer(instance: Any) -> int:
    """The C pointer of a GObject (PyGObject's ``__gpointer__``)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get(instance.__gpointer__, None)


def open_renewal_info() -> None:
    """J-LIS's renewal information page in the user's browser (GLib.Error if there is none)."""
    Gio.AppInfo.launch_default_for_uri(RENEWAL_INFO_URL, None)
