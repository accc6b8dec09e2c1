"""The daemon's bus connection (mncd.dbus.bus): Unix fd passing with every descriptor received
closed, a reply to every call whatever fails, handler tasks kept until done, and name watches.

On a private dbus-daemon with dbus-send as the caller, and on a stand-in bus (fakebus) for what
dbus-daemon never does.
"""

import asyncio
import gc
import os
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from busstack import PrivateBus
from dbus_next import DBusError, Message, PropertyAccess
from dbus_next.aio import MessageBus
from dbus_next.service import dbus_property, method
from fakebus import Answer, FakeBus, on_fake_bus, pipe_held, reply, signal

from mncd import errors
from mncd.dbus.bus import CallError, ExportedInterface, NameWatcher, SafeMessageBus, call

T = TypeVar("T")
BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
PATH = "/test/Probe"
INTERFACE = "io.github.mncd.test.Probe"
FAILED = errors.Failed.dbus_name()


# -- descriptors from a stand-in bus --------------------------------------------------------


class Pipes:
    """Pipes whose write ends the stand-in bus sends: a write end the daemon did not close
    keeps its pipe open."""

    def __init__(self) -> None:
        self.read_ends: dict[str, int] = {}

    def write_end(self, label: str) -> int:
        read_end, write_end = os.pipe()
        self.read_ends[label] = read_end
        return write_end

    def held(self) -> list[str]:
        """The labels of the pipes still held (read once the stand-in bus has closed its
        copies, that is after FakeBus.close())."""
        return [label for label, read_end in self.read_ends.items() if pipe_held(read_end)]


def test_the_bus_is_asked_for_fd_passing_and_used_without_where_it_declines(tmp_path):
    for agree in (True, False):
        (tmp_path / str(agree)).mkdir()
        fake = FakeBus(tmp_path / str(agree), lambda call: [], agree_fds=agree)
        assert on_fake_bus(fake, _negotiated) is agree
        assert fake.auth[1:] == ["NEGOTIATE_UNIX_FD", "BEGIN"]


async def _negotiated(bus: SafeMessageBus) -> bool:
    return bus.unix_fds


def test_descriptors_no_one_keeps_are_closed(tmp_path):
    pipes = Pipes()
    release = threading.Event()

    def answer(message: Message) -> Answer:
        if message.member == "Signal":  # a signal with a descriptor, then a plain reply
            return [
                (signal("Something", "h", [0]), [pipes.write_end("signal")]),
                (reply(message), []),
            ]
        if message.member == "Reply":  # a reply to a call that keeps none
            return [(reply(message, "h", [0]), [pipes.write_end("reply")])]
        if message.member == "Error":  # an error to a call that keeps them
            error = Message.new_error(message, "org.example.Error", "no")
            return [(error, [pipes.write_end("error")])]
        if message.member == "Late":  # after the caller has stopped waiting
            release.wait(timeout=60)
            return [(reply(message, "h", [0]), [pipes.write_end("late")])]
        return [(reply(message), [])]

    async def calls(bus: SafeMessageBus) -> list[str]:
        results = []
        for member, keep in (("Signal", False), ("Reply", False), ("Error", True)):
            try:
                await call(bus, *BUS, member, keep_fds=keep)
                results.append(member)
            except CallError as exc:
                results.append(exc.name)
        try:
            await call(bus, *BUS, "Late", timeout=0.2, keep_fds=True)
        except CallError as exc:
            results.append(exc.name)
        release.set()
        await call(bus, *BUS, "After")  # answered after the late reply: that one was handled
        return results

    fake = FakeBus(tmp_path, answer)
    assert on_fake_bus(fake, calls) == ["Signal", "Reply", "org.example.Error", "Timeout"]
    assert pipes.held() == []


def test_descriptors_of_a_message_cut_off_by_the_end_of_the_connection_are_closed(tmp_path):
    pipes = Pipes()
    fake: FakeBus

    def answer(message: Message) -> Answer:
        # The first bytes of a signal and its descriptor, then the bus goes away.
        fake.send(signal("Cut", "h", [0]), [pipes.write_end("cut")], cut=20)
        fake.connection.shutdown(socket.SHUT_RDWR)
        return []

    async def cut(bus: SafeMessageBus) -> str:
        try:
            await call(bus, *BUS, "Cut")
        except CallError as exc:
            return exc.name
        return "answered"

    fake = FakeBus(tmp_path, answer)
    assert on_fake_bus(fake, cut) == "EOFError"
    assert pipes.held() == []


# -- a private dbus-daemon, dbus-send as the caller -------------------------------------------


class Probe(ExportedInterface):
    """An exported object whose methods fail in each way a handler can."""

    def __init__(self) -> None:
        super().__init__(INTERFACE)
        self.started = asyncio.Event()
        self.waiting: weakref.ref[asyncio.Future[str]] | None = None
        self.broken = False  #: whether Broken fails (not while it is exported)

    def error_reply(self, method: str, exc: BaseException) -> DBusError:
        if isinstance(exc, LookupError):
            raise RuntimeError("the error of the error")
        return DBusError(FAILED, f"{method} failed")

    def premarshalled(self, method: str) -> Callable[[], bytes] | None:
        if method == "Premarshalled":
            raise RuntimeError("no handler can be made")
        return None

    @method()
    def Premarshalled(self) -> "s":  # noqa: F821
        return "unreachable"

    @method()
    async def Unsendable(self) -> "s":  # noqa: F821
        return "\udc80 cannot be encoded"

    @method()
    async def ErrorOfTheError(self) -> "s":  # noqa: F821
        raise KeyError("secret")

    @method()
    def Inode(self, fd: "h") -> "t":  # noqa: F821
        return os.fstat(fd).st_ino

    @method()
    async def Wait(self) -> "s":  # noqa: F821
        future = asyncio.get_running_loop().create_future()
        self.waiting = weakref.ref(future)
        self.started.set()
        return await future

    @dbus_property(access=PropertyAccess.READ)
    def Broken(self) -> "s":  # noqa: F821
        if self.broken:
            raise RuntimeError("secret text from /home/user")
        return "fine"


@pytest.fixture
def private_bus(tmp_path):
    bus = PrivateBus(tmp_path)
    yield bus
    bus.stop()


def serving(private_bus: PrivateBus, body: Callable[[SafeMessageBus, Probe], Awaitable[T]]) -> T:
    """Run ``body`` with a Probe exported by a SafeMessageBus on ``private_bus``."""

    async def main() -> T:
        bus = await SafeMessageBus(bus_address=private_bus.address).connect()
        probe = Probe()
        bus.export(PATH, probe)
        probe.broken = True
        try:
            return await body(bus, probe)
        finally:
            bus.disconnect()

    return asyncio.run(main())


async def dbus_send(address: str, destination: str, member: str, *args: str) -> str:
    """Call with dbus-send (reply within 10 s); what it printed."""
    process = await asyncio.create_subprocess_exec(
        "dbus-send", f"--bus={address}", "--print-reply", "--reply-timeout=10000",
        f"--dest={destination}", PATH, member, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    return out.decode()


@pytest.mark.parametrize(
    ("member", "error"),
    [
        # Before: the handler could not be made, and the call got no reply.
        (f"{INTERFACE}.Premarshalled", f"Error {FAILED}: Premarshalled failed"),
        # Before: the reply could not be marshalled, and the call got no reply.
        (f"{INTERFACE}.Unsendable", f"Error {FAILED}: Unsendable failed"),
        # Before: the interface's error_reply raised, and the call got no reply.
        (f"{INTERFACE}.ErrorOfTheError", "Error org.freedesktop.DBus.Error.Failed: internal error"),
        # Before: dbus-next put the traceback in the reply.
        ("org.freedesktop.DBus.Properties.Get", f"Error {FAILED}: Get failed"),
        # dbus-next's own refusals as they are (before: each logged with a traceback).
        ("org.freedesktop.DBus.Properties.Set",
         "Error org.freedesktop.DBus.Error.PropertyReadOnly: the property is readonly"),
        (f"{INTERFACE}.Missing", "Error org.freedesktop.DBus.Error.UnknownMethod"),
    ],
)  # fmt: skip
def test_every_call_gets_a_reply_with_a_typed_error(private_bus, caplog, member, error):
    args = {
        "org.freedesktop.DBus.Properties.Get": [f"string:{INTERFACE}", "string:Broken"],
        "org.freedesktop.DBus.Properties.Set": [
            f"string:{INTERFACE}",
            "string:Broken",
            "variant:string:x",
        ],
    }.get(member, [])

    async def ask(bus: SafeMessageBus, probe: Probe) -> str:
        return await dbus_send(private_bus.address, bus.unique_name, member, *args)

    out = serving(private_bus, ask)
    assert out.startswith(error), out
    assert "Traceback" not in out and "secret" not in out
    # dbus-next logs no traceback (the probe's own failures are mncd's to log).
    assert not [
        record for record in caplog.records
        if not record.name.startswith("mncd")
        and (record.exc_info or "Traceback" in record.getMessage())
    ]  # fmt: skip


def test_a_call_carrying_a_descriptor_is_answered_and_the_descriptor_closed(private_bus):
    read_end, write_end = os.pipe()

    async def send_fd(bus: SafeMessageBus, probe: Probe) -> tuple[bool, list[Any]]:
        client = await MessageBus(bus_address=private_bus.address, negotiate_unix_fd=True).connect()
        try:
            answer = await client.call(
                Message(destination=bus.unique_name, path=PATH, interface=INTERFACE,
                        member="Inode", signature="h", body=[0], unix_fds=[write_end])
            )  # fmt: skip
        finally:
            client.disconnect()
        return bus.unix_fds, answer.body

    negotiated, body = serving(private_bus, send_fd)
    assert negotiated and body == [os.fstat(write_end).st_ino]
    os.close(write_end)
    assert not pipe_held(read_end)  # the daemon's copy was closed once the call was handled


def test_a_handler_task_is_kept_until_it_has_answered(private_bus):
    async def wait(bus: SafeMessageBus, probe: Probe) -> str:
        caller = asyncio.ensure_future(
            dbus_send(private_bus.address, bus.unique_name, f"{INTERFACE}.Wait")
        )
        await probe.started.wait()
        gc.collect()  # the loop holds only a weak reference to the handler's task
        future = probe.waiting() if probe.waiting else None
        assert future is not None, "the handler's task was collected: no reply would come"
        future.set_result("answered")
        return await caller

    assert 'string "answered"' in serving(private_bus, wait)


def test_one_callback_watching_two_names(private_bus):
    async def watch(bus: SafeMessageBus, probe: Probe) -> tuple[list[str], dict[str, int]]:
        watcher = NameWatcher(bus)
        first = await MessageBus(bus_address=private_bus.address).connect()
        second = await MessageBus(bus_address=private_bus.address).connect()
        gone: list[str] = []
        second_gone = asyncio.Event()

        def on_gone() -> None:  # one function for both names (as a bound method can be)
            gone.append("gone")
            second_gone.set()

        stop_first = watcher.watch(first.unique_name, on_gone)
        watcher.watch(second.unique_name, on_gone)
        stop_first()
        second.disconnect()
        await asyncio.wait_for(second_gone.wait(), 30)
        first.disconnect()
        return gone, watcher._rules

    gone, rules = serving(private_bus, watch)
    assert gone == ["gone"] and rules == {}
