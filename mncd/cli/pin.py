"""PIN input in mncctl: standard input for scripts, a no-echo prompt on a terminal, or nothing
in a desktop session (the daemon asks the user itself, so the PIN never passes through mncctl).

Before any of these the status is checked: a PIN that cannot be used (no card, no certificate,
blocked) is never asked for, and the last try is used only when the user says so.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import unicodedata
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mncd import errors
from mncd.card.digestinfo import HASHES
from mncd.card.errors import PinFormatError
from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy
from mncd.cli.errors import (
    CancelledByUserError,
    LastTryRefused,
    PinInputError,
    blocked_text,
    incorrect_text,
    last_try_text,
    local,
    no_card_text,
    no_certificate_text,
    no_reader_text,
    pcsc_unavailable_text,
    unknown_card_text,
    unreadable_card_text,
)
from mncd.cli.output import MAX_PIN_TRIES, token_text
from mncd.cli.session import Run, being_read, settled_status
from mncd.cli.text import _, capitalized, ngettext, pin_label, pin_rule
from mncd.client import MyNumberCard, Status

T = TypeVar("T")

POLICIES: dict[str, PinPolicy] = {
    "auth": AUTH_PIN,
    "sign": SIGN_PASSWORD,
    "card-info": CARD_INFO_PIN,
}
#: Answers to the last-try question that mean yes (English and Japanese).
YES = frozenset({"y", "yes", "はい", "ｙ"})
#: How often mncctl asks again after an entry of the wrong shape (no try is spent on those).
SHAPE_ROUNDS = 3

#: ``operation(pin, allow_last_try)``: the call that uses the PIN (None: the daemon asks).
Operation = Callable[[str | None, bool], Coroutine[Any, Any, T]]


def prompt(which: str) -> str:
    """The terminal prompt for ``which``: ``Signing password (6 to 16 ...): ``."""
    return _("{label} ({rule}): ").format(label=capitalized(pin_label(which)), rule=pin_rule(which))


def in_desktop_session(env: Mapping[str, str] | None = None) -> bool:
    """Whether a graphical session is around, where the daemon's own PIN dialog can appear."""
    env = os.environ if env is None else env
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def stdin_is_tty() -> bool:
    """Whether standard input is a terminal (mncctl can ask there)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


def tries_note(which: str, tries: int | None) -> str | None:
    """A warning to show before asking for a PIN with few tries left, else None."""
    if tries is None or tries < 0 or tries >= MAX_PIN_TRIES.get(which, 0):
        return None
    if tries == 0:
        return blocked_text(which)
    return ngettext(
        "{n} try is left before the {label} is locked.",
        "{n} tries are left before the {label} is locked.",
        tries,
    ).format(n=tries, label=pin_label(which))


def last_try_warning(which: str) -> str:
    """The line before the y/N question at the last try."""
    return _(
        "Only one try is left for the {label}: a wrong one locks it until it is reset at your "
        "municipal office."
    ).format(label=pin_label(which))


def last_try_question() -> str:
    return _("Use the last try? [y/N] ")


def waiting_line(which: str) -> str:
    """What mncctl says while the daemon's PIN dialog is up."""
    return _("Waiting for you to enter the {label} in the PIN dialog…").format(
        label=pin_label(which)
    )


def fallback_line(exc: errors.PinRequired) -> str:
    """The line before asking on the terminal because the daemon could show no dialog (with
    the reason when it is the usual one: the configured pinentry program is not installed)."""
    program = missing_pinentry()
    if program:
        return _(
            "mncctl: no PIN dialog could be shown because {program} is not installed; asking "
            "here instead."
        ).format(program=program)
    return _("mncctl: no PIN dialog could be shown; asking here instead.")


def missing_pinentry() -> str | None:
    """The pinentry program of the settings when it is not installed, else None."""
    from mncd.config import Config

    program = Config.load(quiet=True).pinentry
    return program if shutil.which(program) is None else None


def shape_problem(which: str, pin: str) -> str | None:
    """Why ``pin`` cannot be the PIN ``which`` (None: it has the right shape). Full-width
    characters and small letters, the usual input-method slips, are named as such."""
    try:
        POLICIES[which].check(pin)
        return None
    except PinFormatError:
        pass
    narrow = unicodedata.normalize("NFKC", pin)
    if narrow != pin and narrow.isascii():
        return _("It was typed in full-width characters: type it in half-width characters.")
    if which == "sign" and any("a" <= ch <= "z" for ch in pin):
        return _(
            "The signing password uses capital letters (A-Z) and digits, and small letters "
            "were typed: check Caps Lock and type it in capitals."
        )
    return _("That is not a valid {label}: {rule}.").format(
        label=pin_label(which), rule=pin_rule(which)
    )


@dataclass(frozen=True)
class PinRequest:
    """How the command line says to get the PIN for ``which`` (auth or sign)."""

    which: str
    from_stdin: bool = False
    allow_last_try: bool = False
    stdin_is_tty: bool = False
    desktop: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, which: str) -> PinRequest:
        return cls(
            which=which,
            from_stdin=args.pin_stdin,
            allow_last_try=args.allow_last_try,
            stdin_is_tty=stdin_is_tty(),
            desktop=in_desktop_session(),
        )


def usable_tries(status: Status, which: str) -> int | None:
    """The tries left for ``which``, or raise the error the daemon would answer when the PIN
    cannot be used at all (so that nobody is asked for it in vain). None: not known."""
    if not usable_card(status):
        return None  # not known (a newer daemon's state, a card still being read): it decides
    certificate = status.certificate(which)
    if not certificate.present:
        raise local(errors.CertificateMissing(no_certificate_text(which)))
    tries = certificate.pin_tries_left
    if tries == 0:
        raise local(errors.PinBlocked(blocked_text(which)))
    return tries


def usable_card(status: Status) -> bool:
    """Whether a My Number Card is present and read; raise the error the daemon would answer
    when no card can be used (no reader, no card, another card or token). False: not known."""
    if status.state == "pcsc-unavailable":
        raise local(errors.PcscUnavailable(pcsc_unavailable_text()))
    if status.state == "no-reader":
        raise local(errors.NoCard(no_reader_text()))
    if status.state == "no-card":
        raise local(errors.NoCard(no_card_text()))
    if status.state == "unknown-card":
        raise local(errors.NotSupported(unknown_card_text()))
    if status.state == "unreadable-card":
        raise local(errors.NoCard(unreadable_card_text()))
    if status.state != "card-present" or being_read(status):
        return False
    if status.token not in ("", "card", "unknown"):
        text = _("mncd cannot use a token of this kind ({kind}): it serves the My Number Card "
                 "itself.").format(kind=token_text(status.token))  # fmt: skip
        raise local(errors.NotSupported(text))
    return True


def read_stdin_pin() -> str:
    """The first line of standard input (``--pin-stdin``)."""
    line = sys.stdin.readline()
    if not line:
        raise PinInputError(_("--pin-stdin: standard input is empty; no PIN was given."))
    pin = line.rstrip("\r\n")
    if not pin:
        raise PinInputError(_("--pin-stdin: the first line of standard input is empty."))
    return pin


def confirm_last_try(which: str) -> None:
    """Ask y/N on the terminal before the last try; raise :class:`CancelledByUserError` unless
    the answer is yes."""
    print(last_try_warning(which), file=sys.stderr)
    print(last_try_question(), end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the question's line
        answer = ""
    if answer.strip().lower() not in YES:
        raise CancelledByUserError(_("The last try was not used: cancelled."))


def ask_secret(text: str) -> str:
    """One entry without echo; an empty one or Ctrl-D/Ctrl-C cancels."""
    try:
        entry = getpass.getpass(text)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the prompt's line
        raise CancelledByUserError(_("Cancelled.")) from None
    if not entry:
        raise CancelledByUserError(_("No PIN was entered: cancelled."))
    return entry


def ask_shaped(which: str, text: str, entry_name: str | None = None) -> str:
    """An entry of the right shape for ``which``, asked again (a few times) after one that is
    not: such entries never reach the card, so no try is spent on them. ``entry_name`` names
    the entry in the hint when a command asks for more than one (``pin change``)."""
    for _round in range(SHAPE_ROUNDS):
        entry = ask_secret(text)
        problem = shape_problem(which, entry)
        if problem is None:
            return entry
        if entry_name:
            problem = _("{entry}: {problem}").format(entry=entry_name, problem=problem)
        print(_("mncctl: {problem} No try was used.").format(problem=problem), file=sys.stderr)
    raise PinInputError(
        _("No valid {label} was typed: cancelled. No try was used.").format(label=pin_label(which))
    )


def ask_on_terminal(which: str, tries: int | None, allow_last_try: bool) -> tuple[str, bool]:
    """A PIN typed on the terminal (no echo), and whether it may use the last try."""
    allow_last_try = before_asking(which, tries, allow_last_try)
    return ask_shaped(which, prompt(which)), allow_last_try


def before_asking(which: str, tries: int | None, allow_last_try: bool) -> bool:
    """Before ``which`` is typed on the terminal: at its last try, the user's confirmation
    (declined: the command ends), otherwise a note of the tries left. Whether the last try may
    be used."""
    if tries == 1 and not allow_last_try:
        confirm_last_try(which)
        return True
    note = tries_note(which, tries)
    if note:
        print(note, file=sys.stderr)
    return allow_last_try


def labelled(which: str, run: Run[T], coroutine: Coroutine[Any, Any, T]) -> T:
    """``run(coroutine)``, with a wrong or locked PIN told as the PIN ``which``."""
    try:
        return run(coroutine)
    except errors.PinIncorrect as exc:
        raise local(
            errors.PinIncorrect(incorrect_text(which, exc.tries_left), exc.tries_left)
        ) from exc
    except errors.PinBlocked as exc:
        if getattr(exc, "local", False):
            raise
        raise local(errors.PinBlocked(blocked_text(which))) from exc


def call_with_pin(
    request: PinRequest, run: Run[Any], card: MyNumberCard, operation: Operation[T]
) -> T:
    """Run ``operation`` with the PIN got as ``request`` says, after checking it can be used."""
    which = request.which
    tries = usable_tries(run(settled_status(card)), which)
    if request.from_stdin:
        if tries == 1 and not request.allow_last_try:
            raise LastTryRefused(last_try_text(which))
        return labelled(which, run, operation(read_stdin_pin(), request.allow_last_try))
    if request.desktop:
        print(waiting_line(which), file=sys.stderr, flush=True)
        try:
            return labelled(which, run, operation(None, request.allow_last_try))
        except errors.PinRequired as exc:
            # No dialog could be shown (no pinentry, ...): ask here when this is a terminal.
            if not request.stdin_is_tty:
                raise
            print(fallback_line(exc), file=sys.stderr, flush=True)
        tries = usable_tries(run(card.get_status()), which)
    elif not request.stdin_is_tty:
        return labelled(which, run, operation(None, request.allow_last_try))
    pin, allow_last_try = ask_on_terminal(which, tries, request.allow_last_try)
    return labelled(which, run, operation(pin, allow_last_try))


def add_pin_arguments(command: argparse.ArgumentParser, which: str) -> None:
    """--hash, --pin-stdin and --allow-last-try, for commands that use the PIN ``which``."""
    label = pin_label(which)
    command.add_argument(
        "--hash", choices=HASHES, default="sha256", help=_("hash algorithm (default: sha256)")
    )
    command.add_argument(
        "--pin-stdin",
        action="store_true",
        help=_("read the {label} from the first line of standard input").format(label=label),
    )
    command.add_argument(
        "--allow-last-try",
        action="store_true",
        help=_("use the {label} even if only one try is left").format(label=label),
    )
