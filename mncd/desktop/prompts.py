"""The daemon asking the user for a PIN: who asks, for what, what it looks like, tries left.

A malformed entry is refused in the dialog and never sent to the card; a wrong PIN asks again
with the tries left; before the last try the user must confirm, since a wrong PIN then blocks
the card until it is reset at the municipal office.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from mncd.card.pin import PinPolicy
from mncd.core.callers import Caller, shorten
from mncd.core.errors import PromptCancelledError, PromptUnavailableError
from mncd.desktop.pinentry import Dialog, Pinentry, PinentryCancelled, PinentryError
from mncd.i18n import translator

if TYPE_CHECKING:
    from mncd.core.pingate import DialogFactory

log = logging.getLogger(__name__)


def who_asks(caller: Caller) -> str:
    """The caller as a dialog names it, starting a sentence: only what the daemon verified."""
    _ = translator().gettext
    if caller.flatpak_app:
        return _("The Flatpak app {app} (process {pid})").format(
            app=caller.display_name, pid=caller.pid
        )
    if caller.script:
        return _("The program {script} ({interpreter}, process {pid})").format(
            script=shorten(caller.script), interpreter=caller.interpreter, pid=caller.pid
        )
    if caller.executable:
        return _("The program {path} (process {pid})").format(
            path=caller.display_name, pid=caller.pid
        )
    if caller.pid > 0:
        return _("An unknown program (process {pid})").format(pid=caller.pid)
    return _("An unknown program")


def _policy_label(policy: PinPolicy) -> str:
    _ = translator().gettext
    return {
        "auth": _("user-authentication PIN"),
        "sign": _("signing password"),
        "card-info": _("card-info PIN"),
    }[policy.name]


def _rule(policy: PinPolicy) -> str:
    _ = translator().gettext
    if policy.name == "sign":
        return _("6 to 16 characters: capital letters A-Z and digits 0-9, both used")
    return _("{n} digits").format(n=policy.min_length)


def dialog(
    caller: Caller, purpose: str, policy: PinPolicy, tries_left: int, changing: bool = False
) -> Dialog:
    """The PIN dialog for ``purpose`` (already a sentence fragment, e.g. "sign a document");
    ``changing``: the current PIN of a PIN change."""
    _ = translator().gettext
    label = _policy_label(policy)
    if changing:
        enter = _("Enter your current {label}: {rule}.")
    else:
        enter = _("Enter your {label}: {rule}.")
    lines = [
        _("{caller} wants to {purpose}.").format(caller=who_asks(caller), purpose=purpose),
        enter.format(label=label, rule=_rule(policy)),
    ]
    if tries_left >= 0:
        lines.append(
            translator()
            .ngettext("{n} try left.", "{n} tries left.", tries_left)
            .format(n=tries_left)
        )
    return Dialog(
        title=_("My Number Card"),
        description="\n".join(lines),
        prompt=_("Current {label}").format(label=label) if changing else label,
        ok=_("OK"),
        cancel=_("Cancel"),
    )


def new_pin_dialog(caller: Caller, purpose: str, policy: PinPolicy) -> Dialog:
    """The dialog asking for the new PIN of a PIN change (typed twice)."""
    _ = translator().gettext
    label = _policy_label(policy)
    lines = [
        _("{caller} wants to {purpose}.").format(caller=who_asks(caller), purpose=purpose),
        _("Choose your new {label}: {rule}. Type it twice.").format(
            label=label, rule=_rule(policy)
        ),
    ]
    return Dialog(
        title=_("My Number Card"),
        description="\n".join(lines),
        prompt=_("New {label}").format(label=label),
        ok=_("OK"),
        cancel=_("Cancel"),
    )


def last_try_dialog(caller: Caller, policy: PinPolicy) -> Dialog:
    _ = translator().gettext
    return Dialog(
        title=_("My Number Card"),
        description=_(
            "Only one try is left for your {label}. If it is wrong, the card locks it and "
            "it must be reset at your municipal office. {caller} is asking. Continue?"
        ).format(label=_policy_label(policy), caller=who_asks(caller)),
        prompt="",
        ok=_("_Yes, use the last try"),
        cancel=_("_No"),
    )


#: Why no dialog can be shown without a display, and the fix (the log and the callers say it).
NO_DISPLAY = (
    "mncd has no DISPLAY or WAYLAND_DISPLAY in its environment to show the PIN dialog on: run "
    "systemctl --user import-environment DISPLAY WAYLAND_DISPLAY, then systemctl --user "
    "restart mncd"
)


class PinDialog:
    """One pinentry conversation for one PIN request: confirmations and entries, with texts;
    ``changing``: a PIN change, which asks the current PIN and then the new one twice."""

    def __init__(
        self,
        program: str,
        caller: Caller,
        purpose: str,
        policy: PinPolicy,
        changing: bool = False,
    ) -> None:
        self.caller = caller
        self.purpose = purpose
        self.policy = policy
        self.changing = changing
        self._entry = Pinentry(program)

    async def __aenter__(self) -> PinDialog:
        if not any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "GPG_TTY")):
            # A pinentry needs a screen or a terminal: without either, fail before the card.
            raise PromptUnavailableError(NO_DISPLAY)
        try:
            await self._entry.__aenter__()
        except PinentryError as exc:
            log.warning("cannot ask for the PIN: %s", exc)
            raise PromptUnavailableError(str(exc)) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._entry.__aexit__(*exc_info)

    async def confirm_last_try(self) -> bool:
        """Whether the user agrees to use the last try."""
        try:
            return await self._entry.confirm(last_try_dialog(self.caller, self.policy))
        except PinentryError as exc:
            raise PromptUnavailableError(str(exc)) from exc

    async def ask(self, tries_left: int, error: str = "") -> bytearray:
        """The PIN the user typed (unchecked); raises PromptCancelledError on Cancel."""
        try:
            return await self._entry.get_pin(
                dialog(self.caller, self.purpose, self.policy, tries_left, self.changing), error
            )
        except PinentryCancelled as exc:
            raise PromptCancelledError("the PIN dialog was cancelled") from exc
        except PinentryError as exc:
            raise PromptUnavailableError(str(exc)) from exc

    async def ask_new(self, error: str = "") -> tuple[bytearray, bool]:
        """The new PIN of a PIN change (unchecked), and whether the pinentry already had it
        typed twice and compared; raises PromptCancelledError on Cancel."""
        _ = translator().gettext
        label = _policy_label(self.policy)
        try:
            return await self._entry.get_new_pin(
                new_pin_dialog(self.caller, self.purpose, self.policy),
                _("New {label} again").format(label=label),
                _("The two entries differ"),
                error,
            )
        except PinentryCancelled as exc:
            raise PromptCancelledError("the PIN dialog was cancelled") from exc
        except PinentryError as exc:
            raise PromptUnavailableError(str(exc)) from exc

    async def ask_repeat(self) -> bytearray:
        """The new PIN typed a second time, for a pinentry that cannot ask twice itself."""
        _ = translator().gettext
        label = _policy_label(self.policy)
        again = new_pin_dialog(self.caller, self.purpose, self.policy)
        again.prompt = _("New {label} again").format(label=label)
        try:
            return await self._entry.get_pin(again)
        except PinentryCancelled as exc:
            raise PromptCancelledError("the PIN dialog was cancelled") from exc
        except PinentryError as exc:
            raise PromptUnavailableError(str(exc)) from exc

    def mismatch_text(self) -> str:
        _ = translator().gettext
        return _("The two entries of the new {label} differ. Type it again.").format(
            label=_policy_label(self.policy)
        )

    def unchanged_text(self) -> str:
        _ = translator().gettext
        return _("The new {label} is the same as the current one. Choose another.").format(
            label=_policy_label(self.policy)
        )

    def malformed_text(self) -> str:
        _ = translator().gettext
        return _("That is not a valid {label}: {rule}.").format(
            label=_policy_label(self.policy), rule=_rule(self.policy)
        )

    def wrong_text(self, tries_left: int) -> str:
        return (
            translator()
            .ngettext(
                "Wrong {label}. {n} try left.",
                "Wrong {label}. {n} tries left.",
                tries_left,
            )
            .format(label=_policy_label(self.policy), n=tries_left)
        )


def pin_dialogs(pinentry: str) -> DialogFactory:
    """The PIN gate's dialogs: :class:`PinDialog` through the ``pinentry`` program."""

    def open_dialog(caller: Caller, purpose: str, policy: PinPolicy, changing: bool) -> PinDialog:
        return PinDialog(pinentry, caller, purpose, policy, changing=changing)

    return open_dialog
