"""The documents page: sign a PDF (chosen, dropped, or opened with "Sign with My Number Card"
from a file manager), its signed copy saved beside it; verify a PDF and show the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gi.repository import Adw, Gdk, Gtk

from mncd.client import MyNumberCard
from mncd.i18n import gettext as _
from mncd.window.jobs import in_thread
from mncd.window.widgets import button, group, named, row

#: What the signed copy of ``NAME.pdf`` is called, beside it (``NAME-signed-2.pdf`` if taken).
SIGNED_SUFFIX = "-signed"


def signed_copy_path(source: Path) -> Path:
    """Where the signed copy of ``source`` goes: beside it, never over an existing file."""
    stem = source.stem
    candidate = source.with_name(f"{stem}{SIGNED_SUFFIX}.pdf")
    number = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = source.with_name(f"{stem}{SIGNED_SUFFIX}-{number}.pdf")
        number += 1
    return candidate


async def sign_document(
    card: MyNumberCard, source: Path, output: Path, field: str | None = None
) -> Any:
    """Sign ``source`` into ``output`` with the signing key, in the signature field ``field``
    (None: the only empty one, else a new one), the daemon asking for the password: the
    window's one call of the documents API."""
    from mncd import documents

    return await documents.sign_pdf(card, source, output, field=field)


def signature_fields(path: Path) -> tuple[list[str], str]:
    """The PDF's empty signature fields (prepared for a signature), and the name a new field
    would get; nothing when the file cannot be read (signing then says why)."""
    from mncd.documents.errors import DocumentError
    from mncd.documents.pdf import free_field_name, open_pdf
    from mncd.documents.pdf import signature_fields as fields_of

    try:
        with path.open("rb") as stream:
            fields = fields_of(open_pdf(stream, path))
    except (OSError, DocumentError):
        return [], ""
    return [name for name, signed in fields.items() if not signed], free_field_name(fields)


async def verify_document(path: Path) -> Any:
    """Verify every signature of the PDF ``path`` (J-LIS's CAs as anchors)."""
    from mncd import documents

    return await documents.verify_pdf(path)


def verification_report(result: Any) -> tuple[str, list[str]]:
    """The verdict in words, and mncctl verify's report of ``result`` line by line."""
    from mncd.documents.report import report_lines, verdict_text

    return verdict_text(result.verdict), report_lines(result)


class DocumentsPage:
    """Sign and verify; ``window`` runs the jobs and shows the results."""

    def __init__(self, window: Any) -> None:
        self.window = window
        self.source: Path | None = None
        self.widget = Adw.PreferencesPage()
        self.widget.set_name("documents")

        self.sign_group = group(
            _("Sign a PDF"),
            _("Drop a PDF here or choose one. A signed copy is saved beside it; the daemon "
              "asks for your signing password."),
        )  # fmt: skip
        self.file_row = row(_("File"), _("no PDF chosen"))
        self.sign_group.add(self.file_row)
        self.sign_button = button(_("Sign"), self.sign, name=_("Sign the PDF"),
                                  style="suggested-action")  # fmt: skip
        self.sign_button.set_sensitive(False)
        buttons = Gtk.Box(spacing=6)
        buttons.append(button(_("Choose…"), self.choose_to_sign, name=_("Choose a PDF to sign")))
        buttons.append(self.sign_button)
        self.sign_group.set_header_suffix(buttons)
        self.fields: list[str] = []  #: the choices of the field row: field names, None = new
        self.field_row = Adw.ComboRow(title=_("Signature field"))
        named(self.field_row, _("Signature field"))
        self.field_row.set_visible(False)
        self.sign_group.add(self.field_row)
        self.result_row = row(_("Result"), "")
        self.result_row.set_visible(False)
        self.sign_group.add(self.result_row)
        self.widget.add(self.sign_group)

        self.verify_group = group(
            _("Verify a PDF"), _("Checks every signature offline, up to J-LIS's CAs.")
        )
        self.verify_group.set_header_suffix(
            button(_("Choose…"), self.choose_to_verify, name=_("Choose a PDF to verify"))
        )
        self.verify_rows: list[Any] = []
        self.widget.add(self.verify_group)

        drop = Gtk.DropTarget.new(Gdk.FileList, Gdk.DragAction.COPY)
        drop.connect("drop", self._dropped)
        self.widget.add_controller(drop)

    # -- signing --------------------------------------------------------------------------------

    def set_source(self, path: Path) -> None:
        """Take ``path`` as the PDF to sign (chosen, dropped or opened)."""
        self.source = path
        self.file_row.set_title(path.name)  # the folder below: a long path cannot break
        self.file_row.set_subtitle(str(path.parent))
        named(self.file_row, f"{_('File')}: {path}")
        self.sign_button.set_sensitive(True)
        self.result_row.set_visible(False)
        self.field_row.set_visible(False)
        self.window.run(
            _("Reading {file}…").format(file=path.name),
            lambda: in_thread(lambda: signature_fields(path)),
            lambda found: self._show_fields(path, *found),
        )

    def _show_fields(self, path: Path, empty: list[str], new: str) -> None:
        """Offer the PDF's prepared (empty) signature fields, and a new one."""
        if path != self.source or not empty:
            return
        self.fields = [*empty, new]
        labels = [*empty, _("a new field ({name})").format(name=new)]
        self.field_row.set_model(Gtk.StringList.new(labels))
        self.field_row.set_selected(0)
        self.field_row.set_visible(True)

    def _dropped(self, _target: Any, value: Any, _x: float, _y: float) -> bool:
        files = value.get_files() if hasattr(value, "get_files") else [value]
        paths = [Path(f.get_path()) for f in files if f.get_path()]
        if not paths:
            return False
        self.set_source(paths[0])
        return True

    def choose_to_sign(self) -> None:
        self._choose(_("Choose a PDF to sign"), self.set_source)

    def choose_to_verify(self) -> None:
        self._choose(_("Choose a PDF to verify"), self.verify)

    def _choose(self, title: str, then: Any) -> None:
        chooser = Gtk.FileChooserNative.new(
            title, self.window.window, Gtk.FileChooserAction.OPEN, _("Open"), _("Cancel")
        )
        pdfs = Gtk.FileFilter()
        pdfs.set_name("PDF")
        pdfs.add_mime_type("application/pdf")
        pdfs.add_suffix("pdf")
        chooser.add_filter(pdfs)

        def answered(dialog: Any, response: int) -> None:
            if response == Gtk.ResponseType.ACCEPT and dialog.get_file() is not None:
                then(Path(dialog.get_file().get_path()))
            dialog.destroy()

        chooser.connect("response", answered)
        chooser.show()
        self._chooser = chooser  # kept alive while shown

    def sign(self) -> None:
        if self.source is None:
            return
        source = self.source
        output = signed_copy_path(source)
        field = None
        if self.field_row.get_visible() and self.fields:
            field = self.fields[min(self.field_row.get_selected(), len(self.fields) - 1)]

        def done(_result: Any) -> None:
            text = _("Signed copy saved as {path}").format(path=output)
            self.result_row.set_subtitle(text)
            named(self.result_row, f"{_('Result')}: {text}")
            self.result_row.set_visible(True)
            self.window.toast(text)

        self.window.run_with_daemon(
            _("Signing {file}: enter your signing password in the PIN dialog…").format(
                file=source.name
            ),
            lambda card: sign_document(card, source, output, field),
            done,
        )

    # -- verifying ------------------------------------------------------------------------------

    def verify(self, path: Path) -> None:
        def done(result: Any) -> None:
            verdict, lines = verification_report(result)
            for old in self.verify_rows:
                self.verify_group.remove(old)
            report = Gtk.Label(label="\n".join(lines), xalign=0, wrap=True, selectable=True)
            report.add_css_class("monospace")
            self.verify_rows = [row(path.name, verdict), report]
            for widget in self.verify_rows:
                self.verify_group.add(widget)
            self.window.toast(f"{path.name}: {verdict}")

        self.window.run(
            _("Verifying {file}…").format(file=path.name), lambda: verify_document(path), done
        )
