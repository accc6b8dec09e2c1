"""A stand-in for the bus daemon, for what Debian's dbus-daemon never does: pass a caller's pidfd
(GetConnectionCredentials' ProcessFD, dbus-daemon 1.15.7 and later), decline fd passing, or send
file descriptors with any message. The daemon's side is the real SafeMessageBus on a real socket.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from dbus_next import Message, MessageType
from dbus_next._private.unmarshaller import Unmarshaller

from mncd.dbus.bus import SafeMessageBus

#: What the fake sends for a call: messages, each with the descriptors it carries (the fake
#: closes them once sent: the receiver's copies are its own).
Answer = list[tuple[Message, list[int]]]

T = TypeVar("T")


class FakeBus:
    """Takes one connection on a socket in ``directory``: authenticates it (agreeing to fd
    passing, or declining with ``agree_fds=False``), answers Hello, and answers every other call
    with what ``answer(call)`` gives."""

    def __init__(
        self, directory: Path, answer: Callable[[Message], Answer], agree_fds: bool = True
    ) -> None:
        self.path = directory / "fake-bus"
        self.address = f"unix:path={self.path}"
        self.answer = answer
        self.agree_fds = agree_fds
        self.auth: list[str] = []  #: the lines the client sent while authenticating
        self.calls: list[Message] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(1)
        self.connection: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        self.connection = connection
        stream = connection.makefile("rb", buffering=0)
        assert stream.read(1) == b"\0"
        while True:
            line = b""
            while not line.endswith(b"\r\n"):
                line += stream.read(1)
            text = line[:-2].decode()
            self.auth.append(text)
            if text.startswith("AUTH EXTERNAL"):
                connection.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            elif text == "NEGOTIATE_UNIX_FD":
                connection.sendall(b"AGREE_UNIX_FD\r\n" if self.agree_fds else b"ERROR\r\n")
            elif text == "BEGIN":
                break
        while True:
            reader = Unmarshaller(stream)
            try:
                while reader.unmarshall() is None:
                    pass
            except (EOFError, OSError):
                return
            call = reader.message
            if call.member == "Hello":
                self.send(reply(call, "s", [":1.1"]))
                continue
            self.calls.append(call)
            for message, fds in self.answer(call):
                self.send(message, fds)

    def send(self, message: Message, fds: list[int] = (), cut: int | None = None) -> None:
        """Send ``message`` with ``fds`` (then closed here); with ``cut``, only its first
        ``cut`` bytes."""
        message.unix_fds = list(fds)
        data = message._marshall(negotiate_unix_fd=bool(fds))[:cut]
        assert self.connection is not None
        if fds:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            self.connection.sendmsg([data], rights)
        else:
            self.connection.sendall(data)
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        """End the connection (the client sees the bus go away)."""
        if self.connection is not None:
            with contextlib.suppress(OSError):  # the client has gone already
                self.connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=30)
        if self.connection is not None:
            self.connection.close()
        self.listener.close()


def reply(call: Message, signature: str = "", body: list | None = None, **fields) -> Message:
    """A method return to ``call`` from the bus."""
    return Message(
        message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
        destination=call.sender or ":1.1", sender="org.freedesktop.DBus",
        signature=signature, body=body or [], **fields,
    )  # fmt: skip


def signal(member: str, signature: str = "", body: list | None = None, **fields) -> Message:
    """A signal from the bus."""
    return Message(
        message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member=member, sender="org.freedesktop.DBus",
        destination=":1.1", signature=signature, body=body or [], **fields,
    )  # fmt: skip


def pipe_held(read_end: int) -> bool:
    """Whether anyone still holds the write end of the pipe whose read end is ``read_end``
    (its own copies closed, the reader sees end of file only once every copy is closed)."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) != b""
    except BlockingIOError:
        return True


def on_fake_bus(fake: FakeBus, body: Callable[[SafeMessageBus], Awaitable[T]]) -> T:
    """Run ``body`` with the daemon's bus connected to ``fake``; both gone afterwards."""

    async def main() -> T:
        bus = await SafeMessageBus(bus_address=fake.address).connect()
        try:
            return await body(bus)
        finally:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await bus.wait_for_disconnect()

    try:
        return asyncio.run(main())
    finally:
        fake.close()
