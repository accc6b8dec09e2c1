"""``mncctl pin``: the tries left on every PIN of the card, and changing a PIN.

``pin status`` reads the live counters (no try is spent). ``pin change`` asks for the current
PIN and the new one twice: in a desktop session the daemon's own dialog asks, so the PINs never
pass through mncctl; on a terminal mncctl asks without echo; ``--pin-stdin`` reads the current
PIN and the new one from two lines of standard input.

(The module is not called ``pin.py``: that name holds mncctl's PIN input, shared by commands.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from mncd import errors
from mncd.cli.errors import (
    CancelledByUserError,
    ExitCode,
    LastTryRefused,
    PinInputError,
    blocked_text,
    last_try_text,
    local,
)
from mncd.cli.files import write_atomically
from mncd.cli.output import format_pin_tries
from mncd.cli.pin import (
    ask_secret,
    ask_shaped,
    before_asking,
    fallback_line,
    in_desktop_session,
    labelled,
    read_stdin_pin,
    settled_status,
    shape_problem,
    stdin_is_tty,
    usable_card,
)
from mncd.cli.session import Run, session
from mncd.cli.text import N_, Texts, _, pin_label, subcommand
from mncd.client import MyNumberCard, PinStatus, Status

WHICH = ("auth", "sign", "card-info")
#: How often mncctl asks for the new PIN on a terminal before it gives up.
NEW_PIN_ROUNDS = 3

#: Every text of ``mncctl pin`` (English msgids, read back translated).
TEXT = Texts(
    {
        "status-title": N_("PIN tries left"),
        "reader": N_("Reader"),
        "not-on-card": N_("not on this card"),
        "label": {
            "auth": N_("User-authentication PIN"),
            "sign": N_("Signing password"),
            "card-info": N_("Card-info PIN"),
        },
        "current-prompt": {
            "auth": N_("Current user-authentication PIN: "),
            "sign": N_("Current signing password: "),
            "card-info": N_("Current card-info PIN: "),
        },
        "new-prompt": {
            "auth": N_("New user-authentication PIN: "),
            "sign": N_("New signing password: "),
            "card-info": N_("New card-info PIN: "),
        },
        "again-prompt": N_("Type it again: "),
        "current-entry": N_("The current {label}"),
        "new-entry": N_("The new {label}"),
        "stdin-shape": N_(
            "--pin-stdin: {entry} ({line} line): {problem} Nothing was sent to the card."
        ),
        "first-line": N_("first"),
        "second-line": N_("second"),
        "unconfirmed": N_(
            "Note: mncctl changes a PIN with the command other implementations "
            "use; it has not been confirmed on real cards."
        ),
        "mismatch": N_("The two entries differ; nothing was sent to the card."),
        "unchanged": N_("The new PIN is the same as the current one."),
        "gave-up": N_("No new PIN was chosen: cancelled. Nothing was sent to the card."),
        "no-new-line": N_(
            "--pin-stdin: the second line of standard input (the new PIN) is missing"
        ),
        "waiting": N_("Waiting for you to change the {label} in the PIN dialog…"),
        "changed": N_("The {label} was changed. Use the new one from now on."),
        "not-changed": N_("{wrong} The {label} was not changed; the current one still applies."),
        "no-sign": N_("The card has no signing certificate, so it has no signing password."),
    }
)


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "pin", _("PIN tries left, and changing a PIN"),
        _("The tries left on the user-authentication PIN, the signing password and the "
          "card-info PIN, read from the card without spending one; and changing one of them, "
          "which needs the current one."),
        "mncctl pin status", "mncctl pin change auth",
    )  # fmt: skip
    actions = command.add_subparsers(dest="pin_command", required=True, metavar=_("ACTION"))
    status = actions.add_parser("status", help=_("tries left on each PIN, read from the card"))
    status.add_argument("--json", action="store_true", help=_("print the counters as JSON"))
    status.set_defaults(func=run_status)
    change = actions.add_parser("change", help=_("change a PIN of the card"))
    change.add_argument(
        "which", choices=WHICH, metavar=_("WHICH"), help=_("which PIN: auth, sign or card-info")
    )
    change.add_argument(
        "--pin-stdin",
        action="store_true",
        help=_("read the current PIN and the new one from the first two lines of standard input"),
    )
    change.add_argument(
        "--allow-last-try", action="store_true",
        help=_("use the current PIN even at its last try"),
    )  # fmt: skip
    change.set_defaults(func=run_change)


# -- pin status ---------------------------------------------------------------------------------


def format_pin_status(status: PinStatus) -> str:
    """The counters as lines for people."""
    lines = [TEXT["status-title"]]
    if status.reader:
        lines.append(f"  {TEXT['reader']}: {status.reader}")
    for which in WHICH:
        counter = status.counter(which)
        value = (
            format_pin_tries(counter.tries_left, counter.max_tries)
            if counter.present
            else TEXT["not-on-card"]
        )
        lines.append(f"  {TEXT['label'][which]}: {value}")
    return "\n".join(lines)


def pin_status_json(status: PinStatus) -> str:
    return json.dumps(status.raw, indent=2, ensure_ascii=False)


def run_status(args: argparse.Namespace) -> int:
    with session() as (call, card):
        usable_card(call(settled_status(card)))
        status = call(card.get_pin_status())
    print(pin_status_json(status) if args.json else format_pin_status(status))
    return ExitCode.OK


# -- pin change ---------------------------------------------------------------------------------


def changeable_tries(status: PinStatus, which: str) -> int | None:
    """Tries left for the current PIN, or the error when it cannot be used (never asked)."""
    counter = status.counter(which)
    if not counter.present:
        if which == "sign":
            raise local(errors.CertificateMissing(TEXT["no-sign"]))
        return None
    if counter.tries_left == 0:
        raise local(errors.PinBlocked(blocked_text(which)))
    return counter.tries_left


def entry_name(which: str, key: str) -> str:
    """``The current signing password``, ``The new signing password``: which entry a hint is
    about."""
    return TEXT[key].format(label=pin_label(which))


def ask_new_pin(which: str, current: str) -> str:
    """The new PIN, typed twice and each entry checked as it is typed: nothing goes to the card
    until it is right."""
    for _round in range(NEW_PIN_ROUNDS):
        new = ask_shaped(which, TEXT["new-prompt"][which], entry_name(which, "new-entry"))
        if new == current:
            print(f"mncctl: {TEXT['unchanged']}", file=sys.stderr)
            continue
        if ask_secret(TEXT["again-prompt"]) != new:
            print(f"mncctl: {TEXT['mismatch']}", file=sys.stderr)
            continue
        return new
    raise CancelledByUserError(TEXT["gave-up"])


def ask_change_on_terminal(
    which: str, tries: int | None, allow_last_try: bool
) -> tuple[str, str, bool]:
    """The current PIN and the new one typed on the terminal, and the last-try consent; the
    current PIN is checked for its shape at once, as ``sign`` and ``auth`` check theirs."""
    allow_last_try = before_asking(which, tries, allow_last_try)
    current = ask_shaped(which, TEXT["current-prompt"][which], entry_name(which, "current-entry"))
    return current, ask_new_pin(which, current), allow_last_try


def read_stdin_pins(which: str) -> tuple[str, str]:
    """The current PIN (first line) and the new one (second line) of standard input, each of
    the right shape and different."""
    current = read_stdin_pin()
    line = sys.stdin.readline()
    new = line.rstrip("\r\n")
    if not new:
        raise PinInputError(TEXT["no-new-line"])
    for pin, key, line_key in ((current, "current-entry", "first-line"),
                               (new, "new-entry", "second-line")):  # fmt: skip
        problem = shape_problem(which, pin)
        if problem:
            raise PinInputError(TEXT["stdin-shape"].format(
                entry=entry_name(which, key), line=TEXT[line_key], problem=problem))  # fmt: skip
    if new == current:
        raise PinInputError(TEXT["unchanged"])
    return current, new


def changes_file() -> str:
    """Where mncctl keeps the cards (their ids) it has changed a PIN of."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(base, "mncd", "cli-pin-changed")


def _changed_cards() -> list[str]:
    """The card ids in the note of PIN changes (none when it cannot be read)."""
    try:
        with open(changes_file(), encoding="ascii") as stream:
            return stream.read().split()
    except (OSError, ValueError):
        return []


def _write_changed_cards(card_ids: list[str]) -> None:
    """The note, replaced (private, atomic); a failure only means the note is shown again."""
    path = Path(changes_file())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, "".join(f"{card}\n" for card in card_ids).encode("ascii"), 0o600)
    except (OSError, ValueError):
        pass


def changed_before(card_id: str) -> bool:
    """Whether mncctl has changed a PIN of the card ``card_id`` before."""
    return card_id in _changed_cards()


def remember_change(card_id: str) -> None:
    """Note that a PIN of ``card_id`` was changed."""
    known = _changed_cards()
    if card_id and card_id not in known:
        _write_changed_cards([*known, card_id])


def forget_change(card_id: str) -> None:
    """Take ``card_id`` out of the note (``mncctl forget``): nothing of it stays behind."""
    known = _changed_cards()
    if card_id in known:
        _write_changed_cards([card for card in known if card != card_id])


def change(run: Run[Any], card: MyNumberCard, args: argparse.Namespace) -> str:
    """Change the PIN the way the command line says, after checking it can be used (the first
    time on a card, with a note that the command is unconfirmed on real cards). The card's id."""
    which: str = args.which
    status: Status = run(settled_status(card))
    usable_card(status)
    tries = changeable_tries(run(card.get_pin_status()), which)
    label = pin_label(which)
    if not changed_before(status.card_id):
        print(TEXT["unconfirmed"], file=sys.stderr, flush=True)
    if args.pin_stdin:
        if tries == 1 and not args.allow_last_try:
            raise LastTryRefused(last_try_text(which))
        current, new = read_stdin_pins(which)
        changing(which, run, card.change_pin(which, pin=current, new_pin=new,
                                             allow_last_try=args.allow_last_try))  # fmt: skip
        return status.card_id
    terminal = stdin_is_tty()
    if in_desktop_session():
        print(TEXT["waiting"].format(label=label), file=sys.stderr, flush=True)
        try:
            changing(which, run, card.change_pin(which, allow_last_try=args.allow_last_try))
            return status.card_id
        except errors.PinRequired as exc:
            # No dialog could be shown: ask here when this is a terminal.
            if not terminal or "allow-last-try" in exc.text:
                raise
            print(fallback_line(exc), file=sys.stderr, flush=True)
        tries = changeable_tries(run(card.get_pin_status()), which)
    elif not terminal:
        changing(which, run, card.change_pin(which, allow_last_try=args.allow_last_try))
        return status.card_id
    current, new, allow = ask_change_on_terminal(which, tries, args.allow_last_try)
    changing(which, run, card.change_pin(which, pin=current, new_pin=new, allow_last_try=allow))
    return status.card_id


def changing(which: str, run: Run[Any], coroutine: Coroutine[Any, Any, Any]) -> None:
    """``run(coroutine)``, a PIN change: a wrong or locked PIN told as the PIN ``which``, and
    that nothing was changed."""
    try:
        labelled(which, run, coroutine)
    except errors.PinIncorrect as exc:
        text = TEXT["not-changed"].format(wrong=exc.text, label=pin_label(which))
        raise local(errors.PinIncorrect(text, exc.tries_left)) from exc


def run_change(args: argparse.Namespace) -> int:
    with session() as (call, card):
        card_id = change(call, card, args)
    remember_change(card_id)
    print(TEXT["changed"].format(label=pin_label(args.which)))
    return ExitCode.OK
