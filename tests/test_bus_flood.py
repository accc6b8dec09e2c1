"""A bus that does not take the daemon's messages: callers that flood it with calls and never read
the replies, the writer that waits for the socket instead of dropping the connection, and the
daemon's reading paused while too much is queued."""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
from pathlib import Path

import pytest
from busstack import BUS_NAME, INTERFACE, OBJECT_PATH, daemon_on_private_bus, name_has_owner
from busstack import wait_for as wait_until
from conftest import READERS
from dbus_next import Message

from mncd.client import MyNumberCard, Status
from mncd.dbus.bus import HIGH_WATER, BusWriter, method_call
from mncd.vcard.sessionbus import SESSION_LIMITS

FLOODERS = 8
FLOOD_CALLS = 5000
GOOD_CALLS = 200
STALLED = "the bus is not taking messages"
CAUGHT_UP = "the bus takes messages again"


class UnreadCalls:
    """A raw connection to the bus that sends GetStatus calls and never reads a reply (dbus-next
    only marshals the messages)."""

    def __init__(self, bus_socket: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)  # a bus that stops reading us fails the test, never hangs it
        self.sock.connect(str(bus_socket))
        uid = str(os.getuid()).encode().hex().encode()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            answer += self.sock.recv(1)
        assert answer.startswith(b"OK "), answer
        self.sock.sendall(b"BEGIN\r\n")

    def flood(self, count: int) -> None:
        hello = method_call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello"
        )
        hello.serial = 1
        data = bytearray(hello._marshall())
        for serial in range(2, count + 2):
            call = method_call(BUS_NAME, OBJECT_PATH, INTERFACE, "GetStatus")
            call.serial = serial
            data += call._marshall()
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


async def well_behaved(address: str, count: int) -> list[Status]:
    """``count`` GetStatus calls, one after the other, each reply read."""
    async with await MyNumberCard.connect(address) as card:
        # A generous timeout: the calls wait behind the flood that the bus queued before them.
        return [
            Status.from_dbus((await card.call("GetStatus", timeout=300))[0]) for _ in range(count)
        ]


@pytest.mark.parametrize(
    ("limits", "flooders", "calls"),
    [
        # A desktop's session bus: eight clients, 5,000 calls each, all reach the daemon.
        (SESSION_LIMITS, FLOODERS, FLOOD_CALLS),
        # dbus-daemon's defaults pass only 128 unanswered calls per connection to the daemon:
        # more connections make the same flood.
        (None, 64, 200),
    ],
    ids=["session-limits", "dbus-defaults"],
)
def test_a_flood_of_unread_calls_does_not_stop_the_daemon(
    sandbox, tmp_path, limits, flooders, calls
):
    # The daemon's socket to the bus gets a small kernel buffer, so that the flood fills it
    # whatever the machine's speed (the writer's job starts when the kernel says EAGAIN).
    env = {**sandbox.env, "MNCD_BUS_SEND_BUFFER": "8192"}
    with daemon_on_private_bus(tmp_path, env, limits) as daemon:
        process = daemon.process
        assert process is not None
        connections = [UnreadCalls(daemon.bus.socket) for _ in range(flooders)]
        try:
            errors: list[BaseException] = []

            def flood(flooder: UnreadCalls) -> None:
                try:
                    flooder.flood(calls)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=flood, args=(f,)) for f in connections]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            # The bus stopped taking the daemon's replies (EAGAIN on its socket), or the daemon
            # died of it (dbus-next's own writer).
            wait_until(lambda: STALLED in daemon.log or process.poll() is not None, "a stall", 120)
            assert process.poll() is None, f"mncd exited with {process.poll()}:\n{daemon.log}"
            statuses = asyncio.run(well_behaved(daemon.bus.address, GOOD_CALLS))
            assert len(statuses) == GOOD_CALLS
            for status in statuses:
                assert status.state == "no-card" and status.readers == READERS
            wait_until(lambda: CAUGHT_UP in daemon.log, "the bus catching up", 300)
            assert name_has_owner(daemon.bus.address)
            assert process.poll() is None
        finally:
            for flooder in connections:
                flooder.close()
        assert daemon.stop() == 0
    log = daemon.log
    assert log.count(STALLED) == log.count(CAUGHT_UP) >= 1 and "Traceback" not in log
    # What the daemon held stayed near the high-water mark (one reply over, not a burst's).
    most = max(int(n) for n in re.findall(r"at most (\d+) bytes queued", log))
    assert HIGH_WATER < most < HIGH_WATER + 64 * 1024
    assert "GetStatus" not in log  # amounts only, never message contents


# -- the writer against a socket whose peer does not read ------------------------------------

HIGH = 256 * 1024
LOW = 64 * 1024
FD_AT = 100  #: the index of the message with a descriptor (after some 50 KiB of small ones)


def fill(sock: socket.socket) -> bytes:
    """Send to ``sock`` until its buffer is full (the peer reads nothing); what was sent."""
    sent = bytearray()
    for size in (65536, 1024, 1):
        while True:
            try:
                sent += b"f" * sock.send(b"f" * size)
            except BlockingIOError:
                break
    return bytes(sent)


def data_signal(serial: int, text: str, fds: list[int] | None = None) -> Message:
    signature, body = ("hs", [0, text]) if fds else ("s", [text])
    message = Message.new_signal("/test", "test.Writer", "Data", signature, body, fds or [])
    message.serial = serial
    return message


def drain(
    peer: socket.socket, length: int, mark: int | None = None
) -> tuple[bytes, list[tuple[int, list[int]]]]:
    """Read ``length`` bytes, and the descriptors received with the offset of the read that
    brought them. Reads stop at ``mark`` and read its byte alone, so descriptors sent with it
    arrive at exactly that offset."""
    data = bytearray()
    received: list[tuple[int, list[int]]] = []
    space = socket.CMSG_SPACE(4 * array.array("i").itemsize)
    while len(data) < length:
        size = min(65536, length - len(data))
        if mark is not None and len(data) <= mark:
            size = 1 if len(data) == mark else min(size, mark - len(data))
        chunk, ancillary, _flags, _address = peer.recvmsg(size, space)
        assert chunk, "the writer's socket closed early"
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                received.append((len(data), list(fds)))
        data += chunk
    return bytes(data), received


async def spin(condition: object, rounds: int = 1000) -> None:
    """Let the loop run until ``condition()`` holds."""
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("the loop never got there")


async def writer_with_a_peer_that_does_not_read(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    pipe_read, pipe_write = os.pipe()
    ours.setblocking(False)
    reads: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(BlockingIOError):
            reads.append(ours.recv(4096))

    loop.add_reader(ours.fileno(), read)  # as dbus-next's connect() registers its reader
    errors: list[Exception] = []
    writer = BusWriter(
        loop, ours, read, errors.append, negotiate_unix_fd=True, high_water=HIGH, low_water=LOW
    )
    try:
        writer.schedule_write()  # the bus answered Hello
        filler = fill(ours)
        # Small messages, one with a descriptor and larger than the socket's buffer (so it is
        # sent in parts), then more small ones: 4 MiB and more in all.
        messages = [data_signal(n, f"{n}:" + "a" * (n * 37 % 1000)) for n in range(1, FD_AT + 1)]
        messages.append(data_signal(FD_AT + 1, "fd:" + "b" * (4 * 1024 * 1024), [pipe_write]))
        messages += [data_signal(n, f"{n}:" + "c" * (n * 53 % 5000)) for n in range(FD_AT + 2, 900)]
        futures = [loop.create_future() for _ in messages]
        for message, future in zip(messages, futures, strict=True):
            writer.schedule_write(message, future)
        expected = [m._marshall(negotiate_unix_fd=True) for m in messages]
        assert writer.queued == sum(map(len, expected)) > HIGH

        # The socket is full: EAGAIN keeps everything queued and the connection up.
        writer.write_callback()
        assert errors == [] and writer.offset == 0 and len(writer.messages) == len(messages)
        # Above the high-water mark reading stopped: a call arriving now is not read.
        assert not writer.reading and not loop.remove_reader(ours.fileno())
        peer.sendall(b"a call")
        for _ in range(20):
            await asyncio.sleep(0)
        assert reads == []

        # The peer takes the filler only: the writer fills the socket again and stops inside
        # the message with the descriptor, the descriptor sent with its first part.
        assert drain(peer, len(filler)) == (filler, [])
        await spin(lambda: writer.fds_sent)
        for _ in range(20):
            await asyncio.sleep(0)
        assert writer.messages[0][0].obj == expected[FD_AT]
        assert 0 < writer.offset < len(expected[FD_AT]) and errors == []

        # Now the peer reads everything: every byte, in order; the descriptor once, at the
        # first byte of its message.
        total = sum(map(len, expected))
        start = sum(map(len, expected[:FD_AT]))
        data, received = await loop.run_in_executor(None, drain, peer, total, start)
        assert data == b"".join(expected)
        [(offset, [fd])] = received
        assert offset == start
        os.write(fd, b"through the descriptor")
        os.close(fd)
        assert os.read(pipe_read, 100) == b"through the descriptor"
        await spin(lambda: all(f.done() for f in futures) and reads)
        assert [f.result() for f in futures] == [None] * len(futures) and errors == []
        assert writer.queued == 0 and writer.reading and reads == [b"a call"]
    finally:
        loop.remove_reader(ours.fileno())
        loop.remove_writer(ours.fileno())
        ours.close()
        peer.close()
        os.close(pipe_read)
        os.close(pipe_write)

    records = [r for r in caplog.records if r.name == "mncd.dbus.bus"]
    paused = [r for r in records if r.levelno == logging.WARNING]
    resumed = [r for r in records if r.getMessage().startswith("reading from the bus again")]
    caught_up = [r for r in records if r.levelno == logging.INFO]
    assert len(paused) == 1 and paused[0].args[0] > HIGH  # type: ignore[index]
    assert len(resumed) == 1 and resumed[0].args[0] < LOW  # type: ignore[index]
    assert len(caught_up) == 1 and CAUGHT_UP in caught_up[0].getMessage()
    assert records.index(paused[0]) < records.index(resumed[0]) < records.index(caught_up[0])


def test_writer_keeps_every_byte_in_order_and_pauses_reading(caplog):
    caplog.set_level(logging.DEBUG, logger="mncd.dbus.bus")
    asyncio.run(writer_with_a_peer_that_does_not_read(caplog))


async def writer_closed_or_broken() -> None:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    errors: list[Exception] = []
    writer = BusWriter(loop, ours, lambda: None, errors.append)
    try:
        writer.schedule_write()
        fill(ours)
        futures = [loop.create_future() for _ in range(3)]
        for n, future in enumerate(futures, 1):
            writer.schedule_write(data_signal(n, "x"), future)
        writer.write_callback()
        assert errors == [] and not any(f.done() for f in futures)
        # The peer goes away: the next send fails for real and ends the connection.
        peer.close()
        writer.write_callback()
        assert len(errors) == 1 and isinstance(errors[0], OSError)
        # The bus's _finalize closes the writer: every queued message's sender learns of it.
        writer.close(errors[0])
        assert [f.exception() for f in futures] == [errors[0]] * 3
        assert writer.queued == 0 and not writer.messages and not writer.reading
        late = loop.create_future()
        writer.schedule_write(data_signal(4, "late"), late)
        assert isinstance(late.exception(), ConnectionError) and not writer.messages
    finally:
        loop.remove_writer(ours.fileno())
        ours.close()


def test_writer_fails_queued_messages_when_the_connection_breaks():
    asyncio.run(writer_closed_or_broken())
