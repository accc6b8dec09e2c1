"""mncctl's exit codes, its own failures, and what the user reads for each error."""

from __future__ import annotations

import enum

from mncd import errors
from mncd.client import BusError, BusUnavailable, CallTimeout, DaemonUnavailable
from mncd.documents.errors import CertificateUnusable, DocumentError

PIN_BLOCKED_HINT = (
    "The PIN is blocked: reset it at your municipal office (市区町村の窓口で再設定してください)."
)
PIN_REQUIRED_HINT = (
    "Run mncctl in a terminal to be asked for it, or pass it with --pin-stdin "
    "(端末で実行するか、--pin-stdin で渡してください)."
)
#: The same for someone already at a terminal (mncctl asks there whenever it can).
PIN_REQUIRED_TERMINAL_HINT = "Pass the PIN with --pin-stdin (--pin-stdin で渡してください)."
LAST_TRY_HINT = (
    "To use the last try anyway, add --allow-last-try "
    "(最後の1回を使うには --allow-last-try を付けてください)."
)

# Why mncctl does not ask for a PIN at all (checked in the status before any prompt).
NO_CARD_TEXT = "no My Number Card is inserted (マイナンバーカードがありません)"
NO_READER_TEXT = "no card reader is connected (カードリーダーが接続されていません)"
PCSC_UNAVAILABLE_TEXT = (
    "the smart-card service (pcscd) is not available (スマートカードのサービスが使えません)"
)
UNKNOWN_CARD_TEXT = (
    "the card in the reader is not a My Number Card (マイナンバーカードではありません)"
)
UNREADABLE_CARD_TEXT = (
    "the card in the reader could not be read: take it out and insert it again "
    "(カードを読み取れません。差し直してください)"
)
NO_CERTIFICATE_TEXT = {
    "auth": "the card has no user-authentication certificate "
    "(利用者証明用電子証明書が搭載されていません)",
    "sign": "the card has no signing certificate: cards of children under 15 carry none "
    "(署名用電子証明書が搭載されていません)",
}


def blocked_text(label: str) -> str:
    """Why a blocked PIN is not asked for."""
    return f"the {label} is blocked: no tries left (ロックされています)"


def last_try_text(label: str) -> str:
    """Why ``--pin-stdin`` is refused at the last try without ``--allow-last-try``."""
    return (
        f"only 1 try is left for the {label}: a wrong one blocks it until it is reset at "
        "your municipal office (残り1回です。間違えるとロックされます)"
    )


class ExitCode(enum.IntEnum):
    """Process exit codes of mncctl."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    PIN = 4
    CANCELLED = 5
    #: The signing certificate is expired or invalidated: nothing was signed.
    CERTIFICATE = 6
    #: mncctl verify: a signature is invalid (changed, damaged, a certificate rule broken).
    INVALID = 7
    #: mncctl verify: every signature is intact, but not every one chains to a known CA.
    UNTRUSTED = 8


class UsageError(Exception):
    """A mistake in the command line found after parsing (missing file, ...)."""


class PinInputError(Exception):
    """No usable PIN was given (empty line on standard input)."""


class CancelledByUserError(Exception):
    """The user gave up (Ctrl-C, end of input at a prompt)."""


class LastTryRefused(errors.PinRequired):
    """mncctl kept the PIN back: one try is left and ``--allow-last-try`` was not given."""


class SetupError(Exception):
    """Installing or removing a piece of desktop configuration failed."""


class VerificationError(Exception):
    """A signature from the card does not verify against the certificate it came with."""


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code for an exception that ended a command."""
    if isinstance(exc, (DaemonUnavailable, BusUnavailable)):
        return ExitCode.UNREACHABLE
    if isinstance(exc, errors.PIN_ERRORS):
        return ExitCode.PIN
    if isinstance(exc, (errors.Cancelled, CancelledByUserError, KeyboardInterrupt)):
        return ExitCode.CANCELLED
    if isinstance(exc, UsageError):
        return ExitCode.USAGE
    if isinstance(exc, PinInputError):
        return ExitCode.PIN
    if isinstance(exc, CertificateUnusable):
        return ExitCode.CERTIFICATE
    return ExitCode.FAILED


def error_lines(exc: BaseException, *, terminal: bool = False) -> list[str]:
    """What the user reads (one line, sometimes a hint after it) for an exception; ``terminal``:
    mncctl runs on a terminal, where it asks for a PIN itself."""
    if isinstance(exc, DaemonUnavailable):
        detail = f": {exc.text}" if exc.text else f" ({exc.name})"
        return [f"the mncd daemon is not running and could not be started{detail}"]
    if isinstance(exc, BusError):
        return [f"{exc.text} ({exc.name})" if exc.text else exc.name]
    if isinstance(exc, errors.MncdError):
        lines = [exc.text or _split_camel(exc.name)]
        if isinstance(exc, errors.PinBlocked):
            lines.append(PIN_BLOCKED_HINT)
        elif isinstance(exc, errors.PinRequired):
            lines.append(pin_required_hint(exc, terminal=terminal))
        return lines
    if isinstance(exc, KeyboardInterrupt):
        return ["cancelled"]
    if isinstance(
        exc,
        (
            BusUnavailable,
            CallTimeout,
            UsageError,
            PinInputError,
            CancelledByUserError,
            VerificationError,
            DocumentError,
            SetupError,
            OSError,
        ),
    ):
        return [str(exc) or "cancelled"]
    # a bug or a malformed reply: still no traceback for a person
    return [f"unexpected error: {type(exc).__name__}: {exc}"]


def is_last_try_refusal(exc: errors.PinRequired) -> bool:
    """Whether the PIN was refused because only one try is left (mncctl's or the daemon's)."""
    return isinstance(exc, LastTryRefused) or "allow-last-try" in exc.text


def pin_required_hint(exc: errors.PinRequired, *, terminal: bool) -> str:
    """The hint after a PinRequired: the flag that helps, never "run it in a terminal" to
    someone who is in one."""
    if is_last_try_refusal(exc):
        return LAST_TRY_HINT
    return PIN_REQUIRED_TERMINAL_HINT if terminal else PIN_REQUIRED_HINT


def _split_camel(name: str) -> str:
    """``PinIncorrect`` -> ``pin incorrect``: a readable fallback when the text is empty."""
    words: list[str] = []
    for ch in name:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch.lower())
    return "".join(words)
