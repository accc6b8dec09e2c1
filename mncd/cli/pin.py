"""PIN input in mncctl: standard input for scripts, a no-echo prompt on a terminal, or nothing
in a desktop session (the daemon asks the user itself, so the PIN never passes through mncctl).

Before any of these the status is checked: a PIN that cannot be used (no card, no certificate,
blocked) is never asked for, and the last try is used only when the user says so.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mncd import errors
from mncd.card.digestinfo import HASHES
from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy
from mncd.cli.errors import (
    NO_CARD_TEXT,
    NO_CERTIFICATE_TEXT,
    NO_READER_TEXT,
    PCSC_UNAVAILABLE_TEXT,
    PIN_BLOCKED_HINT,
    UNKNOWN_CARD_TEXT,
    UNREADABLE_CARD_TEXT,
    CancelledByUserError,
    LastTryRefused,
    PinInputError,
    blocked_text,
    last_try_text,
)
from mncd.cli.output import MAX_PIN_TRIES, TOKEN_TEXT
from mncd.cli.session import Run
from mncd.client import MyNumberCard, Status

T = TypeVar("T")

SIGN_PROMPT = "署名用電子証明書のパスワード (signing password, 6–16 A–Z/0–9): "
AUTH_PROMPT = "利用者証明用電子証明書の暗証番号 (authentication PIN, 4 digits): "
CARD_INFO_PROMPT = "券面事項入力補助用の暗証番号 (card-info PIN, 4 digits): "
PROMPTS = {"auth": AUTH_PROMPT, "sign": SIGN_PROMPT, "card-info": CARD_INFO_PROMPT}
POLICIES: dict[str, PinPolicy] = {
    "auth": AUTH_PIN,
    "sign": SIGN_PASSWORD,
    "card-info": CARD_INFO_PIN,
}
LAST_TRY_QUESTION = "Use the last try? (最後の1回を使いますか) [y/N] "
YES = frozenset({"y", "yes", "はい"})

#: How long to wait for a card that was just inserted to be read before its status counts.
READ_WAIT = 10.0

#: ``operation(pin, allow_last_try)``: the call that uses the PIN (None: the daemon asks).
Operation = Callable[[str | None, bool], Coroutine[Any, Any, T]]


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
        return PIN_BLOCKED_HINT
    if tries == 1:
        return "Only 1 try is left before the PIN is blocked (残り1回)."
    return f"{tries} tries are left before the PIN is blocked (残り{tries}回)."


def last_try_warning(which: str) -> str:
    """The line before the y/N question at the last try."""
    return (
        f"Only 1 try is left for the {POLICIES[which].label_en} (残り1回): a wrong PIN blocks it "
        "until it is reset at your municipal office (間違えると市区町村の窓口での再設定が必要です)."
    )


def waiting_line(which: str) -> str:
    """What mncctl says while the daemon's PIN dialog is up."""
    policy = POLICIES[which]
    return (
        f"Waiting for you to enter the {policy.label_en} in the PIN dialog… "
        f"({policy.label_ja}を入力画面で入力してください)"
    )


def fallback_line(exc: errors.PinRequired) -> str:
    """The line before asking on the terminal because the daemon could show no dialog."""
    problem = exc.text or "no PIN dialog could be shown"
    return f"mncctl: {problem} — asking here instead (この端末で入力してください)"


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


def being_read(status: Status) -> bool:
    """Whether a card is in the reader but not read yet (its certificates are not known); an
    older daemon said card-present with the certificates not from the card."""
    return status.state == "reading" or (
        status.state == "card-present" and status.auth.source != "card"
    )


async def settled_status(card: MyNumberCard, wait: float = READ_WAIT) -> Status:
    """GetStatus, once a card that was just inserted has been read (or ``wait`` is over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    status = await card.get_status()
    while being_read(status) and loop.time() < deadline:
        await asyncio.sleep(0.1)
        status = await card.get_status()
    return status


def usable_tries(status: Status, which: str) -> int | None:
    """The tries left for ``which``, or raise the error the daemon would answer when the PIN
    cannot be used at all (so that nobody is asked for it in vain). None: not known."""
    if not usable_card(status):
        return None  # not known (a newer daemon's state, a card still being read): it decides
    certificate = status.certificate(which)
    if not certificate.present:
        raise errors.CertificateMissing(NO_CERTIFICATE_TEXT[which])
    tries = certificate.pin_tries_left
    if tries == 0:
        raise errors.PinBlocked(blocked_text(POLICIES[which].label_en))
    return tries


def usable_card(status: Status) -> bool:
    """Whether a My Number Card is present and read; raise the error the daemon would answer
    when no card can be used (no reader, no card, another card or token). False: not known."""
    if status.state == "pcsc-unavailable":
        raise errors.PcscUnavailable(PCSC_UNAVAILABLE_TEXT)
    if status.state == "no-reader":
        raise errors.NoCard(NO_READER_TEXT)
    if status.state == "no-card":
        raise errors.NoCard(NO_CARD_TEXT)
    if status.state == "unknown-card":
        raise errors.NotSupported(UNKNOWN_CARD_TEXT)
    if status.state == "unreadable-card":
        raise errors.NoCard(UNREADABLE_CARD_TEXT)
    if status.state != "card-present" or being_read(status):
        return False
    if status.token not in ("", "card", "unknown"):
        kind = TOKEN_TEXT.get(status.token, status.token)
        raise errors.NotSupported(f"tokens of kind {kind} are not supported")
    return True


def read_stdin_pin() -> str:
    """The first line of standard input (``--pin-stdin``)."""
    line = sys.stdin.readline()
    if not line:
        raise PinInputError("--pin-stdin: standard input is empty, no PIN was given")
    pin = line.rstrip("\r\n")
    if not pin:
        raise PinInputError("--pin-stdin: the first line of standard input is empty")
    return pin


def confirm_last_try(which: str) -> None:
    """Ask y/N on the terminal before the last try; raise :class:`CancelledByUserError` unless
    the answer is yes."""
    print(last_try_warning(which), file=sys.stderr)
    print(LAST_TRY_QUESTION, end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the question's line
        answer = ""
    if answer.strip().lower() not in YES:
        raise CancelledByUserError("the last try was not used: cancelled (キャンセルしました)")


def ask_on_terminal(which: str, tries: int | None, allow_last_try: bool) -> tuple[str, bool]:
    """A PIN typed on the terminal (no echo), and whether it may use the last try."""
    if tries == 1 and not allow_last_try:
        confirm_last_try(which)
        allow_last_try = True
    else:
        note = tries_note(which, tries)
        if note:
            print(note, file=sys.stderr)
    try:
        pin = getpass.getpass(PROMPTS[which])
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)  # end the prompt's line
        raise CancelledByUserError("cancelled") from None
    if not pin:
        raise CancelledByUserError("no PIN entered: cancelled")
    return pin, allow_last_try


def call_with_pin(
    request: PinRequest, run: Run[Any], card: MyNumberCard, operation: Operation[T]
) -> T:
    """Run ``operation`` with the PIN got as ``request`` says, after checking it can be used."""
    tries = usable_tries(run(settled_status(card)), request.which)
    if request.from_stdin:
        if tries == 1 and not request.allow_last_try:
            raise LastTryRefused(last_try_text(POLICIES[request.which].label_en))
        return run(operation(read_stdin_pin(), request.allow_last_try))
    if request.desktop:
        print(waiting_line(request.which), file=sys.stderr, flush=True)
        try:
            return run(operation(None, request.allow_last_try))
        except errors.PinRequired as exc:
            # No dialog could be shown (no pinentry, ...): ask here when this is a terminal.
            if not request.stdin_is_tty:
                raise
            print(fallback_line(exc), file=sys.stderr, flush=True)
        tries = usable_tries(run(card.get_status()), request.which)
    elif not request.stdin_is_tty:
        return run(operation(None, request.allow_last_try))
    pin, allow_last_try = ask_on_terminal(request.which, tries, request.allow_last_try)
    return run(operation(pin, allow_last_try))


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
