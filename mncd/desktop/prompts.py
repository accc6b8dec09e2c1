"""The daemon asking the user for a PIN: who asks, for what, what it looks like, tries left.

A malformed entry is refused in the dialog and never sent to the card; a wrong PIN asks again
with the tries left; before the last try the user must confirm, since a wrong PIN then blocks
the card until it is reset at the municipal office.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mncd.card.errors import PinBlockedError, PinFormatError, PinIncorrectError
from mncd.card.pin import PinPolicy, wipe
from mncd.daemon.callers import Caller, shorten
from mncd.desktop.pinentry import Dialog, Pinentry, PinentryCancelled, PinentryError
from mncd.i18n import translator

log = logging.getLogger(__name__)
T = TypeVar("T")


class PromptCancelledError(Exception):
    """The user cancelled the PIN dialog or declined the last try."""


class PromptUnavailableError(Exception):
    """No PIN dialog could be shown (pinentry missing or failing)."""


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


def dialog(caller: Caller, purpose: str, policy: PinPolicy, tries_left: int) -> Dialog:
    """The PIN dialog for ``purpose`` (already a sentence fragment, e.g. "sign a document")."""
    _ = translator().gettext
    label = _policy_label(policy)
    lines = [
        _("{caller} wants to {purpose}.").format(caller=who_asks(caller), purpose=purpose),
        _("Enter your {label}: {rule}.").format(label=label, rule=_rule(policy)),
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
        prompt=label,
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


async def with_pin(
    program: str,
    caller: Caller,
    purpose: str,
    policy: PinPolicy,
    tries_left: Callable[[], int],
    attempt: Callable[[bytearray], Awaitable[T]],
) -> T:
    """Ask for the PIN and run ``attempt`` with it until it succeeds, is cancelled or blocks."""
    _ = translator().gettext
    try:
        async with Pinentry(program) as entry:
            error = ""
            confirmed_last_try = False
            while True:
                tries = tries_left()
                if tries == 0:
                    raise PinBlockedError(policy.label_en)
                if tries == 1 and not confirmed_last_try:
                    if not await entry.confirm(last_try_dialog(caller, policy)):
                        raise PromptCancelledError("the last try was not confirmed")
                    confirmed_last_try = True
                pin = await entry.get_pin(dialog(caller, purpose, policy, tries), error)
                try:
                    try:
                        checked = policy.check(pin)
                    except PinFormatError:
                        error = _("That is not a valid {label}: {rule}.").format(
                            label=_policy_label(policy), rule=_rule(policy)
                        )
                        continue
                    try:
                        return await attempt(checked)
                    except PinIncorrectError as exc:
                        error = (
                            translator()
                            .ngettext(
                                "Wrong {label}. {n} try left.",
                                "Wrong {label}. {n} tries left.",
                                exc.tries_left,
                            )
                            .format(label=_policy_label(policy), n=exc.tries_left)
                        )
                    finally:
                        wipe(checked)
                finally:
                    wipe(pin)
    except PinentryCancelled as exc:
        raise PromptCancelledError("the PIN dialog was cancelled") from exc
    except PinentryError as exc:
        log.warning("cannot ask for the PIN: %s", exc)
        raise PromptUnavailableError(str(exc)) from exc
