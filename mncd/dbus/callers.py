"""The caller behind a D-Bus sender, as the bus vouches for it (see :mod:`mncd.core.callers`)."""

from __future__ import annotations

import logging
import os

from dbus_next.aio import MessageBus

from mncd.core.callers import Caller, CallerProcess, pid_of
from mncd.dbus import bus as dbus_bus

log = logging.getLogger(__name__)


async def lookup(bus: MessageBus, sender: str) -> CallerProcess:
    """The process behind the unique bus name ``sender`` (its pidfd is the caller's to close):
    the pidfd the bus passes (``ProcessFD``), or else one opened at once for its pid."""
    try:
        reply = await dbus_bus.call(
            bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetConnectionCredentials", "s", [sender], keep_fds=True,
        )  # fmt: skip
    except dbus_bus.CallError as exc:
        log.debug("no credentials for %s: %s", sender, exc)
        return CallerProcess(0)
    received = list(reply.unix_fds or [])
    try:
        credentials = reply.body[0] if reply.signature == "a{sv}" else {}
        pid_value = credentials.get("ProcessID")
        if pid_value is None or pid_value.signature != "u" or pid_value.value <= 0:
            return CallerProcess(0)
        pid = int(pid_value.value)
        fd_value = credentials.get("ProcessFD")
        if fd_value is not None and fd_value.signature == "h":
            index = fd_value.value
            if isinstance(index, int) and 0 <= index < len(received):
                if pid_of(received[index]) != pid:
                    log.warning("the bus's pidfd for %s is not its process %d", sender, pid)
                    return CallerProcess(pid, known=False)
                return CallerProcess(pid, received.pop(index))
        try:
            return CallerProcess(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            return CallerProcess(pid, known=False)
        except OSError:
            return CallerProcess(pid)  # no pidfd to be had: read by pid alone
    finally:
        dbus_bus.close_fds(received)


async def identify(bus: MessageBus, sender: str) -> Caller:
    """The caller behind the unique bus name ``sender``, as its process is now."""
    process = await lookup(bus, sender)
    try:
        return process.read()
    finally:
        process.close()
