"""The checks page: the personal data on the card against the signing certificate (what
``mncctl check`` does), and the doctor's checks as a list (what ``mncctl doctor`` prints)."""

from __future__ import annotations

from typing import Any

from gi.repository import Adw

from mncd.i18n import gettext as _
from mncd.window.jobs import in_thread
from mncd.window.widgets import button, group, row


class ChecksPage:
    def __init__(self, window: Any) -> None:
        self.window = window
        self.widget = Adw.PreferencesPage()
        self.widget.set_name("checks")

        self.data_group = group(
            _("Personal data"),
            _("Compare the name, address, birth date and sex on the card with the signing "
              "certificate. The daemon asks for the card-info PIN (and the signing password if "
              "it needs it); only which kinds of data differ is shown, never their values."),
        )  # fmt: skip
        self.data_group.set_header_suffix(
            button(_("Check"), self.check_personal_data,
                   name=_("Check the personal data against the signing certificate"))
        )  # fmt: skip
        self.data_rows: list[Any] = []
        self.widget.add(self.data_group)

        self.doctor_group = group(
            _("Checks"),
            _("pcscd, the readers, the card, the daemon, its user unit, notifications, the "
              "settings file and the PIN dialog: what works, and what to do."),
        )  # fmt: skip
        self.doctor_group.set_header_suffix(
            button(_("Run the checks"), self.run_doctor, name=_("Run the checks"))
        )
        self.doctor_rows: list[Any] = []
        self.widget.add(self.doctor_group)

    def _replace(self, box: Any, old: list[Any], new: list[Any]) -> list[Any]:
        for widget in old:
            box.remove(widget)
        for widget in new:
            box.add(widget)
        return new

    def check_personal_data(self) -> None:
        from mncd.cli.check import TEXT, describe

        def done(result: Any) -> None:
            lines = describe(result)
            rows = [row(_("Result"), line) for line in lines]
            self.data_rows = self._replace(self.data_group, self.data_rows, rows)
            self.window.toast(lines[0])

        self.window.run_with_daemon(TEXT["waiting"], lambda card: card.check_personal_data(), done)

    def run_doctor(self) -> None:
        from mncd.cli.doctor import FAIL, TEXT, diagnose

        def done(findings: Any) -> None:
            rows = [
                row(f"{TEXT['level'][f.level]} · {TEXT['name'][f.check]}", f.text) for f in findings
            ]
            self.doctor_rows = self._replace(self.doctor_group, self.doctor_rows, rows)
            failed = [f for f in findings if f.level == FAIL]
            summary = (
                TEXT["summary-fail"].format(count=len(failed)) if failed else (TEXT["summary-ok"])
            )
            self.window.toast(summary)

        self.window.run(_("Running the checks…"), lambda: in_thread(diagnose), done)
