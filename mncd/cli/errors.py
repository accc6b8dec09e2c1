"""mncctl's exit codes, its own failures, and what the user reads for each error."""

from __future__ import annotations

import enum

from mncd import errors
from mncd.client import BusError, BusUnavailable, CallTimeout, DaemonUnavailable

PIN_BLOCKED_HINT = (
    "The PIN is blocked: reset it at your municipal office (市区町村の窓口で再設定してください)."
)
PIN_REQUIRED_HINT = "Run mncctl in a terminal to be asked for it, or pass it with --pin-stdin."


class ExitCode(enum.IntEnum):
    """Process exit codes of mncctl."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    PIN = 4
    CANCELLED = 5


class UsageError(Exception):
    """A mistake in the command line found after parsing (missing file, ...)."""


class PinInputError(Exception):
    """No usable PIN was given (empty line on standard input)."""


class CancelledByUserError(Exception):
    """The user gave up (Ctrl-C, end of input at a prompt)."""


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
    return ExitCode.FAILED


def error_lines(exc: BaseException) -> list[str]:
    """What the user reads (one line, sometimes a hint after it) for an exception."""
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
            lines.append(PIN_REQUIRED_HINT)
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
            OSError,
        ),
    ):
        return [str(exc) or "cancelled"]
    # a bug or a malformed reply: still no traceback for a person
    return [f"unexpected error: {type(exc).__name__}: {exc}"]


def _split_camel(name: str) -> str:
    """``PinIncorrect`` -> ``pin incorrect``: a readable fallback when the text is empty."""
    words: list[str] = []
    for ch in name:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch.lower())
    return "".join(words)
