"""mncctl's exit codes, its own failures, and the one line the user reads for each error."""

from __future__ import annotations

import enum
from typing import TypeVar

from mncd import errors
from mncd.cli.text import _, ngettext, pin_label
from mncd.client import BusError, BusUnavailable, CallTimeout, DaemonUnavailable
from mncd.documents.errors import CertificateUnusable, DocumentError

E = TypeVar("E", bound=errors.MncdError)

#: Where the daemon's log is, for errors that it alone can explain.
LOG_HINT = "journalctl --user -u mncd"
#: D-Bus errors meaning the daemon went away while a call was under way.
STOPPED_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected"}
)
#: D-Bus errors meaning nothing on the bus provides mncd.
NOT_INSTALLED_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
        "org.freedesktop.DBus.Error.Spawn.FileInvalid",
    }
)


def install_command() -> str:
    """How this user runs this installation's ``mncd --install-user-service``: ``mncd`` when
    that is the one on the PATH, else its full path (a checkout's ``.venv/bin/mncd``)."""
    import os
    import shlex
    import sys

    beside = os.path.join(os.path.dirname(sys.executable), "mncd")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        found = os.path.join(directory or ".", "mncd")
        if os.path.isfile(found) and os.access(found, os.X_OK):
            if os.path.realpath(found) == os.path.realpath(beside):
                return "mncd --install-user-service"
            break
    return f"{shlex.quote(beside)} --install-user-service"


def local(exc: E) -> E:
    """Marks an API error that mncctl raised itself, with its own (translated) sentence."""
    exc.local = True  # type: ignore[attr-defined]
    return exc


def no_card_text() -> str:
    return _("No My Number Card is in the reader: insert it and try again.")


def no_reader_text() -> str:
    return _("No card reader is connected: connect one and insert your My Number Card.")


def pcsc_unavailable_text() -> str:
    return _(
        "The smart-card service pcscd is not running: install and start it with "
        "'sudo apt install pcscd && sudo systemctl enable --now pcscd.socket'."
    )


def unknown_card_text() -> str:
    return _("The card in the reader is not a My Number Card.")


def unreadable_card_text() -> str:
    return _("The card in the reader could not be read: take it out and insert it again.")


def no_certificate_text(which: str) -> str:
    if which == "sign":
        return _(
            "The card has no signing certificate: cards of children under 15 carry none, and "
            "one can be issued at your municipal office."
        )
    return _("The card has no user-authentication certificate.")


def blocked_text(which: str) -> str:
    """Why a blocked PIN is not asked for, and what to do (one line)."""
    return _(
        "The {label} is locked: it was entered wrongly too many times. Have it reset at your "
        "municipal office (bring your My Number Card)."
    ).format(label=pin_label(which))


def last_try_text(which: str) -> str:
    """Why ``--pin-stdin`` is refused at the last try without ``--allow-last-try``."""
    return _(
        "Only one try is left for the {label}; a wrong one locks it until it is reset at your "
        "municipal office. To use it anyway, add --allow-last-try."
    ).format(label=pin_label(which))


def incorrect_text(which: str, tries_left: int | None) -> str:
    """A wrong PIN, with the tries left."""
    label = pin_label(which)
    if tries_left is None:
        return _("Wrong {label}.").format(label=label)
    return ngettext(
        "Wrong {label}: {n} try left.", "Wrong {label}: {n} tries left.", tries_left
    ).format(label=label, n=tries_left)


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
    #: mncctl verify: intact, but a certificate is expired or revoked now and no RFC 3161
    #: timestamp proves the signature was made before.
    EXPIRED = 9
    #: mncctl verify: the file carries no signature.
    NO_SIGNATURE = 10


class UsageError(Exception):
    """A mistake in the command line found after parsing (missing file, ...)."""


class PinInputError(Exception):
    """No usable PIN was given (empty line on standard input)."""


class CancelledByUserError(Exception):
    """The user gave up (Ctrl-C, end of input at a prompt)."""


class LastTryRefused(errors.PinRequired):
    """mncctl kept the PIN back: one try is left and ``--allow-last-try`` was not given."""

    local = True


class SetupError(Exception):
    """Installing or removing a piece of desktop configuration failed."""


class VerificationError(Exception):
    """A signature from the card does not verify against the certificate it came with."""


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code for an exception that ended a command."""
    if isinstance(exc, (DaemonUnavailable, BusUnavailable)) or daemon_stopped(exc):
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


def daemon_stopped(exc: BaseException) -> bool:
    """Whether the daemon went away while it had a call to answer."""
    return isinstance(exc, BusError) and exc.name in STOPPED_ERRORS


def error_line(exc: BaseException, *, terminal: bool = False) -> str:
    """The one line the user reads for an exception that ended a command; ``terminal``:
    mncctl runs on a terminal, where it asks for a PIN itself."""
    if isinstance(exc, BusError):
        return _bus_error_line(exc)
    if isinstance(exc, errors.MncdError):
        if getattr(exc, "local", False) and exc.text:
            return exc.text
        return api_error_line(exc, terminal=terminal)
    if isinstance(exc, BusUnavailable):
        return _("The session bus cannot be reached: run mncctl inside your desktop session.")
    if isinstance(exc, CallTimeout):
        return _("mncd did not answer in time. Its log may say why: {command}").format(
            command=LOG_HINT
        )
    if isinstance(exc, KeyboardInterrupt):
        return _("Cancelled.")
    if isinstance(
        exc,
        (
            UsageError,
            PinInputError,
            CancelledByUserError,
            VerificationError,
            DocumentError,
            SetupError,
            OSError,
        ),
    ):
        return str(exc) or _("Cancelled.")
    # a bug or a malformed reply: still no traceback for a person
    return _("Unexpected error: {kind}: {detail}").format(kind=type(exc).__name__, detail=exc)


def error_lines(exc: BaseException, *, terminal: bool = False) -> list[str]:
    """The lines for an exception (one: a sentence and its next step)."""
    return [error_line(exc, terminal=terminal)]


def _bus_error_line(exc: BusError) -> str:
    if daemon_stopped(exc):
        return _(
            "mncd stopped before it answered; nothing was signed or changed. Its log may say "
            "why: {command}"
        ).format(command=LOG_HINT)
    if exc.name in NOT_INSTALLED_ERRORS:
        return _(
            "mncd is not installed for this user: install it with '{command}', then try again."
        ).format(command=install_command())
    if isinstance(exc, DaemonUnavailable):
        return _("mncd could not be started. Its log may say why: {command}").format(
            command=LOG_HINT
        )
    return _("The session bus answered with an error: {name}: {text}").format(
        name=exc.name, text=exc.text or "-"
    )


def api_error_line(exc: errors.MncdError, *, terminal: bool = False) -> str:
    """mncctl's sentence for an error the daemon answered (the daemon's text is in the
    daemon's language; its facts, such as the tries left, are kept)."""
    if isinstance(exc, errors.PinIncorrect):
        if exc.tries_left is None:
            return _("Wrong PIN or password.")
        return ngettext(
            "Wrong PIN or password: {n} try left.", "Wrong PIN or password: {n} tries left.",
            exc.tries_left,
        ).format(n=exc.tries_left)  # fmt: skip
    if isinstance(exc, errors.PinRequired):
        return pin_required_text(exc, terminal=terminal)
    simple = {
        errors.NoCard: no_card_text,
        errors.PcscUnavailable: pcsc_unavailable_text,
        errors.PinFormat: lambda: _(
            "That PIN or password does not have the right form; nothing was sent to the card."
        ),
        errors.PinBlocked: lambda: _(
            "The PIN or password is locked: it was entered wrongly too many times. Have it "
            "reset at your municipal office (bring your My Number Card)."
        ),
        errors.Cancelled: lambda: _("Cancelled; nothing was sent to the card."),
        errors.CardRemoved: lambda: _(
            "The card was taken out or reset during the operation: insert it and try again."
        ),
        errors.CertificateMissing: lambda: _("The card has no such certificate."),
        errors.CertificateInvalid: lambda: _(
            "The certificate cannot be used, or the card's answer did not match it: see "
            "'mncctl status'."
        ),
        errors.NotSupported: lambda: _(
            "mncd cannot use this card or token: it serves the My Number Card itself."
        ),
        errors.Busy: lambda: _("Another PIN dialog is open: finish it, then try again."),
    }
    for cls, text in simple.items():
        if isinstance(exc, cls):
            return text()
    if isinstance(exc, errors.InvalidArgument):
        return _("mncd refused the request: {detail}").format(detail=exc.text or exc.name)
    return _("mncd could not do it. Its log may say why: {command}").format(command=LOG_HINT)


def is_last_try_refusal(exc: errors.PinRequired) -> bool:
    """Whether the PIN was refused because only one try is left (mncctl's or the daemon's)."""
    return isinstance(exc, LastTryRefused) or "allow-last-try" in exc.text


def pin_required_text(exc: errors.PinRequired, *, terminal: bool) -> str:
    """A PIN that could not be asked for: the flag that helps, never "run it in a terminal" to
    someone who is in one."""
    if is_last_try_refusal(exc):
        return _(
            "Only one try is left; a wrong PIN locks it until it is reset at your municipal "
            "office. To use it anyway, add --allow-last-try."
        )
    if terminal:
        return _("A PIN is needed and no PIN dialog could be shown: pass it with --pin-stdin.")
    return _(
        "A PIN is needed and no PIN dialog could be shown: run mncctl in a terminal to be asked "
        "there, or pass it with --pin-stdin."
    )
