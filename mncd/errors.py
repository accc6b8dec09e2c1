"""mncd's errors, defined once: the daemon raises them, its front doors send them, clients
receive them.

Each class is one ``io.github.mncd.MyNumberCard1.Error.<Name>`` of the D-Bus API and carries its
name, so ``except PinIncorrect`` reads as the API documentation does. Plain exceptions: importing
this module needs no D-Bus library.
"""

from __future__ import annotations

import re
from typing import ClassVar

from mncd.api import ERROR_PREFIX


class MncdError(Exception):
    """An error answered by mncd (``io.github.mncd.MyNumberCard1.Error.*``)."""

    #: The last part of the D-Bus error name.
    name: ClassVar[str] = "Failed"

    def __init__(self, text: str = "") -> None:
        super().__init__(text or self.name)
        self.text = text

    @classmethod
    def dbus_name(cls) -> str:
        """The full D-Bus error name."""
        return ERROR_PREFIX + cls.name


class NoCard(MncdError):
    """No My Number Card is inserted."""

    name = "NoCard"


class PcscUnavailable(MncdError):
    """The PC/SC service (pcscd) is not available."""

    name = "PcscUnavailable"


class PinFormat(MncdError):
    """The PIN has the wrong shape; nothing was sent to the card."""

    name = "PinFormat"


class PinIncorrect(MncdError):
    """The card rejected the PIN; :attr:`tries_left` tries remain (None when not said)."""

    name = "PinIncorrect"

    def __init__(self, text: str = "", tries_left: int | None = None) -> None:
        super().__init__(text)
        if tries_left is None:
            match = _TRIES_LEFT.search(text)
            tries_left = int(match.group(1)) if match else None
        self.tries_left = tries_left


#: How the daemon's PinIncorrect text says the tries left (see the service's error table).
_TRIES_LEFT = re.compile(r"残り(\d+)回")


class PinBlocked(MncdError):
    """No tries are left: the PIN must be reset at the municipal office."""

    name = "PinBlocked"


class PinRequired(MncdError):
    """A PIN is needed and could not be asked for (or the last try needs a confirmation)."""

    name = "PinRequired"


class Cancelled(MncdError):
    """The user cancelled, or the operation was cancelled."""

    name = "Cancelled"


class CardRemoved(MncdError):
    """The card was removed or reset during the operation."""

    name = "CardRemoved"


class CertificateMissing(MncdError):
    """The card (or the cache) has no such certificate."""

    name = "CertificateMissing"


class CertificateInvalid(MncdError):
    """The certificate can no longer be used, or the card's answer does not verify against it."""

    name = "CertificateInvalid"


class InvalidArgument(MncdError):
    """An argument or option of the call is wrong."""

    name = "InvalidArgument"


class NotSupported(MncdError):
    """The card or token is of a kind mncd cannot serve."""

    name = "NotSupported"


class Busy(MncdError):
    """Too many calls are waiting for a PIN dialog; try again when the open one is closed."""

    name = "Busy"


class Failed(MncdError):
    """Anything else; the daemon's log says more."""

    name = "Failed"


#: Every API error by its short name.
API_ERRORS: dict[str, type[MncdError]] = {
    cls.name: cls
    for cls in (
        NoCard,
        PcscUnavailable,
        PinFormat,
        PinIncorrect,
        PinBlocked,
        PinRequired,
        Cancelled,
        CardRemoved,
        CertificateMissing,
        CertificateInvalid,
        InvalidArgument,
        NotSupported,
        Busy,
        Failed,
    )
}

#: Errors about a PIN (mncctl exits with its PIN code for them).
PIN_ERRORS: tuple[type[MncdError], ...] = (PinFormat, PinIncorrect, PinBlocked, PinRequired)


def from_dbus_name(name: str, text: str) -> MncdError | None:
    """The API error for a D-Bus error name, or None when the name is not one of ours."""
    if not name.startswith(ERROR_PREFIX):
        return None
    cls = API_ERRORS.get(name.removeprefix(ERROR_PREFIX))
    if cls is None:  # an error a newer daemon added: still a failure
        return Failed(text or name)
    return cls(text)
