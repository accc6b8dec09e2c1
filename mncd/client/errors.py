"""How a call can fail on the way to the daemon (the daemon's own errors are :mod:`mncd.errors`)."""

from __future__ import annotations

from mncd import errors

# Replies of the bus (not the daemon) meaning the daemon is not running and could not be started.
_UNAVAILABLE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoServer",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)
_UNAVAILABLE_PREFIXES = ("org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")


class ClientError(Exception):
    """A failure on the way to the daemon (not an answer of the daemon)."""


class BusUnavailable(ClientError):
    """The session bus cannot be reached, or the connection to it was lost."""


class BusError(ClientError):
    """An error reply that is not one of mncd's API errors (from the bus, or a foreign one)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text or name)
        self.name = name
        self.text = text


class DaemonUnavailable(BusError):
    """mncd is not running on this bus and could not be started (no activation file, ...)."""


class CallTimeout(ClientError):
    """The daemon did not answer in time."""


def error_for_reply(name: str, text: str) -> Exception:
    """The exception for an error reply named ``name``."""
    api_error = errors.from_dbus_name(name, text)
    if api_error is not None:
        return api_error
    if name in _UNAVAILABLE_ERRORS or name.startswith(_UNAVAILABLE_PREFIXES):
        return DaemonUnavailable(name, text)
    return BusError(name, text)
