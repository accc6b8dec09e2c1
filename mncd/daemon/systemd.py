"""systemd integration: sd_notify messages, the service watchdog and journal-aware logging.

Everything here degrades to a no-op outside systemd, so the daemon can also be run by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

__all__ = ["notify", "setup_logging", "under_systemd", "watchdog_interval"]

SYSLOG_IDENTIFIER = "mncd"
STREAM_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Marks the handler setup_logging() installed, so a second call replaces it instead of adding one.
_HANDLER_MARK = "_mncd_handler"


def _notify_address(value: str) -> str | bytes:
    """The socket address for ``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract socket."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET address: {value!r}")


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``, ``"STATUS=…"``) to systemd as one datagram.

    Returns False when ``$NOTIFY_SOCKET`` is unset (not started by systemd as a notify service),
    True when the message was sent. Raises ValueError for a malformed assignment or address and
    OSError when the socket cannot be reached.
    """
    if not assignments:
        raise ValueError("notify() needs at least one assignment")
    for line in assignments:
        if "=" not in line or "\n" in line:
            raise ValueError(f"not a single KEY=VALUE line: {line!r}")
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = _notify_address(target)
    payload = "\n".join(assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(5.0)
        sent = sock.sendto(payload, address)
    if sent != len(payload):
        raise OSError(f"short write to NOTIFY_SOCKET: {sent} of {len(payload)} bytes")
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), None without a watchdog.

    ``$WATCHDOG_PID``, when set, must be this process: the watchdog is meant for the main process,
    not for children that inherited the environment.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def under_systemd() -> bool:
    """Whether stderr is connected to the journal (``$JOURNAL_STREAM`` is fd 2's ``dev:inode``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(2)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def setup_logging(verbose: bool = False) -> None:
    """Log to the journal under systemd, else to stderr; INFO, or DEBUG when ``verbose``.

    Replaces a handler installed by an earlier call and leaves other root handlers alone.
    """
    handler: logging.Handler
    if under_systemd():
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STREAM_FORMAT))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("dbus_next").setLevel(logging.WARNING)
