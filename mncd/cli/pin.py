"""PIN input in mncctl: standard input for scripts, a no-echo prompt on a terminal, or nothing
in a desktop session (the daemon asks the user itself, so the PIN never passes through mncctl)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from mncd.card.digestinfo import HASHES
from mncd.cli.errors import PIN_BLOCKED_HINT, CancelledByUserError, PinInputError
from mncd.cli.output import MAX_PIN_TRIES
from mncd.cli.session import Run
from mncd.client import MyNumberCard
from mncd.errors import MncdError

SIGN_PROMPT = "署名用電子証明書のパスワード (signing password, 6–16 A–Z/0–9): "
AUTH_PROMPT = "利用者証明用電子証明書の暗証番号 (authentication PIN, 4 digits): "


def in_desktop_session(env: Mapping[str, str] | None = None) -> bool:
    """Whether a graphical session is around, where the daemon's own PIN dialog can appear."""
    env = os.environ if env is None else env
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def tries_note(which: str, tries: int | None) -> str | None:
    """A warning to show before asking for a PIN with few tries left, else None."""
    if tries is None or tries < 0 or tries >= MAX_PIN_TRIES.get(which, 0):
        return None
    if tries == 0:
        return PIN_BLOCKED_HINT
    if tries == 1:
        return "Only 1 try is left before the PIN is blocked (残り1回)."
    return f"{tries} tries are left before the PIN is blocked (残り{tries}回)."


def read_pin(
    *,
    from_stdin: bool,
    prompt: str,
    stdin_is_tty: bool,
    note: Callable[[], str | None],
    desktop: bool = False,
) -> str | None:
    """The PIN to send: one line of stdin; None in a desktop session (the daemon asks the user
    itself, so the PIN never passes through mncctl); a no-echo prompt on a terminal; else None."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise PinInputError("--pin-stdin: standard input is empty, no PIN was given")
        pin = line.rstrip("\r\n")
        if not pin:
            raise PinInputError("--pin-stdin: the first line of standard input is empty")
        return pin
    if desktop or not stdin_is_tty:
        return None
    message = note()
    if message:
        print(message, file=sys.stderr)
    try:
        pin = getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the prompt's line
        raise CancelledByUserError("cancelled") from None
    if not pin:
        raise CancelledByUserError("no PIN entered: cancelled")
    return pin


def add_pin_arguments(command: argparse.ArgumentParser) -> None:
    """--hash, --pin-stdin and --allow-last-try, for commands that use a PIN."""
    command.add_argument(
        "--hash", choices=HASHES, default="sha256", help="hash algorithm (default: sha256)"
    )
    command.add_argument(
        "--pin-stdin",
        action="store_true",
        help="read the PIN from the first line of standard input",
    )
    command.add_argument(
        "--allow-last-try",
        action="store_true",
        help="use the PIN even if only one try is left",
    )


def obtain_pin(
    args: argparse.Namespace, which: str, prompt: str, run: Run[Any], card: MyNumberCard
) -> str | None:
    """The PIN for ``which`` (auth or sign) as the command line says to get it."""

    def note() -> str | None:
        try:
            status = run(card.get_status())
        except MncdError:
            return None
        return tries_note(which, status.certificate(which).pin_tries_left)

    return read_pin(
        from_stdin=args.pin_stdin,
        prompt=prompt,
        stdin_is_tty=sys.stdin.isatty(),
        note=note,
        desktop=in_desktop_session(),
    )
