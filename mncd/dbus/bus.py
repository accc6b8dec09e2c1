"""Every workaround of dbus-next's internals, in one place.

dbus-next 0.2.3 is the library's final release (pinned exactly in ``pyproject.toml``), so these
patches cannot break under a new version; each names the private attribute it touches and why.
"""

from __future__ import annotations

import array
import asyncio
import contextvars
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from dbus_next import DBusError, Message, MessageFlag, Variant

# Private: the header layout constants and the marshaller, for a reply marshalled in advance.
from dbus_next._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.constants import MessageType
from dbus_next.service import ServiceInterface

log = logging.getLogger(__name__)

#: Longest the daemon waits for a reply from another service (the bus, a notification server).
CALL_TIMEOUT = 10.0

#: Bytes queued for the bus above which the daemon stops reading from it. Replies are about
#: 1 KiB (GetStatus) to 4 KiB (Sign), and the kernel's socket buffer takes some 200 KiB on its
#: own: 1 MiB queued on top of that means the bus has not taken messages for a while, not a
#: burst. Reading again at a quarter of it keeps a flood from pausing and resuming per message.
HIGH_WATER = 1024 * 1024
#: Bytes queued below which the daemon reads from the bus again.
LOW_WATER = 256 * 1024


class CallInfo(NamedTuple):
    """Who sent the method call being handled, and whether it allows interaction."""

    sender: str = ""
    allow_interaction: bool = False


_CALL: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("call", default=None)


def current_call() -> CallInfo:
    """The method call the running handler answers (empty outside a handler)."""
    return _CALL.get() or CallInfo()


class ExportedInterface(ServiceInterface):
    """A ServiceInterface served by :class:`SafeMessageBus`: it says how errors reach callers
    and which replies it marshals in advance."""

    def error_reply(self, method: str, exc: BaseException) -> DBusError:
        """The D-Bus error a caller gets for ``exc`` (no traceback, path or secret)."""
        return DBusError("org.freedesktop.DBus.Error.Failed", "internal error")

    def wrong_arguments(self, method: str, expected: str, given: str) -> DBusError:
        """The error for a call of ``method`` with arguments of the wrong types."""
        return DBusError(
            "org.freedesktop.DBus.Error.InvalidArgs",
            f"{method} takes arguments ({expected}), not ({given})",
        )

    def premarshalled(self, method: str) -> Callable[[], bytes] | None:
        """A function giving ``method``'s reply body already marshalled, or None."""
        return None


class BusWriter:
    """Writes a connection's outgoing messages in order, waiting whenever the socket is full.

    Stands in for dbus-next's ``_MessageWriter``, which takes EAGAIN from a full socket for a
    lost connection (dbus-next issue 153): a bus slower than a flood of calls then ended the
    daemon. Here a message the socket did not take whole stays first in the queue with its
    offset, and writing goes on when the loop finds the socket writable again. Above
    ``high_water`` bytes queued, the connection's reader is removed (no calls are taken, so no
    more replies pile up; the bus holds them meanwhile) until the queue is below ``low_water``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        read: Callable[[], None],
        on_error: Callable[[Exception], None],
        *,
        negotiate_unix_fd: bool = False,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.read = read
        self.on_error = on_error
        self.negotiate_unix_fd = negotiate_unix_fd
        self.high_water = high_water
        self.low_water = low_water
        #: Messages not yet sent whole: bytes, file descriptors, the future of ``bus.send``.
        self.messages: deque[tuple[memoryview, list[int], asyncio.Future[None] | None]] = deque()
        self.offset = 0  #: bytes of the first message already sent
        self.fds_sent = False  #: whether the first message's descriptors went with its start
        self.queued = 0  #: bytes waiting to be sent
        self.reading = True  #: whether the connection's reader is registered with the loop
        #: While the bus lags: how often reading was paused and the most bytes queued (logged
        #: once when it starts and once when everything is sent, not at every pause).
        self.stall: tuple[int, int] | None = None
        self.started = False  #: dbus-next writes nothing before the bus answers Hello
        self.closed = False

    def buffer_message(self, msg: Message, future: asyncio.Future[None] | None = None) -> None:
        """Queue ``msg``, marshalled now (its serial is already set)."""
        if self.closed:
            _fail(future, ConnectionError("the bus connection is closed"))
            return
        # Private: Message._marshall() gives a message's bytes (what dbus-next's writer sends).
        data = msg._marshall(negotiate_unix_fd=self.negotiate_unix_fd)
        fds = list(msg.unix_fds) if self.negotiate_unix_fd else []
        self.messages.append((memoryview(data), fds, future))
        self.queued += len(data)
        if self.stall and self.queued > self.stall[1]:
            self.stall = (self.stall[0], self.queued)
        if self.reading and self.queued > self.high_water:
            self._pause()

    def schedule_write(
        self, msg: Message | None = None, future: asyncio.Future[None] | None = None
    ) -> None:
        """Queue ``msg`` and write when the socket is writable (dbus-next's interface: called
        without a message once the bus has answered Hello)."""
        if msg is None:
            self.started = True
        else:
            self.buffer_message(msg, future)
        if self.started and not self.closed:
            self.loop.add_writer(self.fd, self.write_callback)

    def write_callback(self) -> None:
        """Send what the socket takes; the loop calls again once it is writable."""
        try:
            while self.messages:
                data, fds, future = self.messages[0]
                if fds and not self.fds_sent:
                    # The descriptors go with the first bytes sent of their message.
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = self.sock.sendmsg([data[self.offset :]], rights)
                    self.fds_sent = True
                else:
                    sent = self.sock.send(data[self.offset :])
                self.offset += sent
                self.queued -= sent
                if self.offset < len(data):
                    break  # the socket is full: the rest when it is writable again
                self.messages.popleft()
                self.offset, self.fds_sent = 0, False
                if future is not None and not future.done():
                    future.set_result(None)
            else:
                self.loop.remove_writer(self.fd)
        except (BlockingIOError, InterruptedError):
            pass  # nothing sent: the writer stays registered and the message first in line
        except Exception as exc:  # the connection is broken
            self.on_error(exc)
            return
        if not self.reading and self.queued < self.low_water and not self.closed:
            self._resume()
        if self.stall and self.reading and not self.messages:
            pauses, most = self.stall
            self.stall = None
            log.info(
                "the bus takes messages again: all sent (reading paused %d times, at most %d "
                "bytes queued)",
                pauses,
                most,
            )

    def _pause(self) -> None:
        """Stop reading from the bus: no more calls, so no more replies, until it catches up."""
        self.reading = False
        self.loop.remove_reader(self.fd)
        if self.stall is None:
            self.stall = (1, self.queued)
            log.warning(
                "the bus is not taking messages (%d bytes queued); reading from it paused until "
                "it does",
                self.queued,
            )
        else:
            self.stall = (self.stall[0] + 1, self.stall[1])
            log.debug("reading from the bus paused again (%d bytes queued)", self.queued)

    def _resume(self) -> None:
        self.reading = True
        self.loop.add_reader(self.fd, self.read)
        # Bytes already read into the stream's buffer raise no event: read them now.
        self.loop.call_soon(self.read)
        log.debug("reading from the bus again (%d bytes queued)", self.queued)

    def close(self, error: Exception | None = None) -> None:
        """The connection has ended: fail what is still queued, never read again."""
        self.closed = True
        self.reading = False
        error = error or ConnectionError("the bus connection is closed")
        while self.messages:
            _fail(self.messages.popleft()[2], error)
        self.queued = 0


def _fail(future: asyncio.Future[None] | None, error: Exception) -> None:
    """Fail the future of a message that will never be sent."""
    if future is not None and not future.done():
        future.set_exception(error)
        # Mark it retrieved: most senders never await it (their calls learn of the end through
        # their reply handlers), and asyncio would log each as an unhandled error.
        future.exception()


class SafeMessageBus(MessageBus):
    """dbus-next's asyncio bus, with method handlers that never leak or mis-log errors and a
    writer that waits for a full socket instead of dropping the connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Private: MessageBus._writer is dbus-next's _MessageWriter, which every send goes
        # through (schedule_write) and which takes EAGAIN for a lost connection; ours waits.
        # It reads MessageBus._loop, ._sock, ._negotiate_unix_fd, ._message_reader (the reader
        # connect() registers for the socket) and ._finalize (ends the connection).
        self._writer = BusWriter(
            self._loop,
            self._sock,
            self._message_reader,
            self._finalize,
            negotiate_unix_fd=self._negotiate_unix_fd,
        )
        # For tests: a small kernel send buffer makes a flood fill the socket on any machine
        # (private: MessageBus._sock is the connected socket).
        send_buffer = os.environ.get("MNCD_BUS_SEND_BUFFER")
        if send_buffer and send_buffer.isdigit():
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(send_buffer))

    # Private: MessageBus._message_reader() is the loop's reader of the bus socket; it
    # dispatches every message available at once. Ours stops as soon as the writer stops
    # reading, so one burst of calls cannot queue much more than the high-water mark.
    def _message_reader(self) -> None:
        try:
            while self._writer.reading:
                # Private: MessageBus._unmarshaller reads one message at a time from the socket.
                if not self._unmarshaller.unmarshall():
                    break
                self._on_message(self._unmarshaller.message)
                self._unmarshaller = self._create_unmarshaller()
        except Exception as exc:
            self._finalize(exc)

    # Private: MessageBus._finalize(err) ends the connection (dbus-next's reader calls it at
    # EOF, our writer on a broken socket); the writer then fails what it holds and stays closed.
    def _finalize(self, err: Exception | None = None) -> None:
        self._writer.close(err)
        super()._finalize(err)

    # Private: MessageBus._find_message_handler(msg) picks the handler of an incoming call and
    # answers UnknownMethod when the signature differs; one of our methods called with the
    # wrong argument types gets a clear error from the interface instead.
    def _find_message_handler(self, msg: Message) -> Any:
        handler = super()._find_message_handler(msg)
        if handler is not None:
            return handler
        # Private: MessageBus._path_exports maps object paths to exported interfaces, and
        # ServiceInterface._get_methods lists an interface's methods with their signatures.
        for interface in self._path_exports.get(msg.path, []):
            if not isinstance(interface, ExportedInterface) or interface.name != msg.interface:
                continue
            for method in ServiceInterface._get_methods(interface):
                if method.name == msg.member and not method.disabled:
                    return _answer_with(
                        interface.wrong_arguments(method.name, method.in_signature, msg.signature)
                    )
        return None

    # Private: MessageBus._make_method_handler(interface, method) builds the function that
    # answers a call. dbus-next's own sends tracebacks to callers and logs every D-Bus error as
    # an unhandled exception; ours maps errors through the interface, runs async methods as
    # tasks that know their caller, and sends pre-marshalled replies where the interface has one.
    def _make_method_handler(self, interface: ServiceInterface, method: Any) -> Any:
        if not isinstance(interface, ExportedInterface):
            return super()._make_method_handler(interface, method)

        def send(msg: Message, reply: Message) -> None:
            if self.connected and not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                self.send(reply)

        def reply_to(msg: Message, outcome: Callable[[], Any]) -> None:
            try:
                # Private: ServiceInterface._fn_result_to_body turns a method's return value
                # into a reply body (as dbus-next's own handler does).
                body, fds = ServiceInterface._fn_result_to_body(
                    outcome(), method.out_signature_tree
                )
                reply = Message.new_method_return(msg, method.out_signature, body, fds)
            except Exception as exc:
                reply = interface.error_reply(method.name, exc)._as_message(msg)
            except asyncio.CancelledError as exc:
                reply = interface.error_reply(method.name, exc)._as_message(msg)
            send(msg, reply)

        body_of = interface.premarshalled(method.name)
        if body_of is not None:

            def premarshalled_handler(msg: Message, send_reply: Any) -> None:
                try:
                    reply: Message = PreMarshalledReply(msg, method.out_signature, body_of())
                except Exception as exc:
                    reply = interface.error_reply(method.name, exc)._as_message(msg)
                send(msg, reply)

            return premarshalled_handler

        # Private: ServiceInterface._msg_body_to_args unpacks a call's body into arguments.
        if not asyncio.iscoroutinefunction(method.fn):
            # Answered at once, from memory: no task, same error handling.
            def sync_handler(msg: Message, send_reply: Any) -> None:
                args = ServiceInterface._msg_body_to_args(msg)
                reply_to(msg, lambda: method.fn(interface, *args))

            return sync_handler

        def handler(msg: Message, send_reply: Any) -> None:
            context = contextvars.copy_context()
            allow = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
            context.run(_CALL.set, CallInfo(msg.sender or "", allow))
            args = ServiceInterface._msg_body_to_args(msg)
            task = asyncio.get_running_loop().create_task(
                method.fn(interface, *args), context=context
            )
            task.add_done_callback(lambda done: reply_to(msg, done.result))

        return handler


def _answer_with(error: DBusError) -> Callable[[Message, Any], None]:
    """A message handler that answers every call with ``error``."""

    def answer(msg: Message, send_reply: Any) -> None:
        send_reply(error._as_message(msg))

    return answer


class PreMarshalledReply(Message):
    """A method return whose body was marshalled earlier.

    dbus-next 0.2's wire format starts the body 8-aligned after the header, so its bytes do not
    depend on the header; only the header is marshalled per reply.
    """

    def __init__(self, call: Message, signature: str, body: bytes) -> None:
        super().__init__(
            message_type=MessageType.METHOD_RETURN,
            reply_serial=call.serial,
            destination=call.sender,
            signature=signature,
        )
        self._marshalled_body = body

    # Private: Message._marshall() is what the bus's writer calls to get a message's bytes.
    def _marshall(self, negotiate_unix_fd: bool = False) -> bytes:
        fields = [[HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial)]]
        if self.destination:
            fields.append([HeaderField.DESTINATION.value, Variant("s", self.destination)])
        fields.append([HeaderField.SIGNATURE.value, Variant("g", self.signature)])
        header = Marshaller(
            "yyyyuua(yv)",
            [
                LITTLE_ENDIAN,
                self.message_type.value,
                self.flags.value,
                PROTOCOL_VERSION,
                len(self._marshalled_body),
                self.serial,
                fields,
            ],
        )
        header.marshall()
        header.align(8)
        return bytes(header.buffer) + self._marshalled_body


def marshall_body(signature: str, body: Sequence[Any]) -> bytes:
    """A message body marshalled once, for :class:`PreMarshalledReply`."""
    marshaller = Marshaller(signature, list(body))
    marshaller.marshall()
    return bytes(marshaller.buffer)


def method_call(
    destination: str, path: str, interface: str, member: str, signature: str = "",
    body: Sequence[Any] = (),
) -> Message:  # fmt: skip
    """A method call message (for the daemon's own calls to other services)."""
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )


class CallError(Exception):
    """A call to another service failed: an error reply, no reply in time, or no connection."""

    def __init__(self, name: str, text: str = "") -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Sequence[Any] = (),
    timeout: float = CALL_TIMEOUT,
) -> Message:
    """Call another service's method; the reply, or :class:`CallError`."""
    message = method_call(destination, path, interface, member, signature, body)
    try:
        reply = await asyncio.wait_for(bus.call(message), timeout)
    except TimeoutError as exc:
        raise CallError("Timeout", f"no reply to {member}") from exc
    except Exception as exc:  # a broken or closed connection
        raise CallError(type(exc).__name__, str(exc)) from exc
    if reply is None:
        raise CallError("NoReply", member)
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CallError(reply.error_name or "Error", text)
    return reply


class NameWatcher:
    """Tells when a name leaves the bus (``NameOwnerChanged`` with no new owner)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._watches: dict[int, tuple[str, Callable[[], None]]] = {}
        self._rules: dict[str, int] = {}
        bus.add_message_handler(self._on_message)

    def watch(self, name: str, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` once when ``name`` has no owner (at once if it has none now);
        returns a function that stops watching."""
        key = id(on_gone)
        self._watches[key] = (name, on_gone)
        if self._rules.get(name, 0) == 0:
            self._match("AddMatch", name)
        self._rules[name] = self._rules.get(name, 0) + 1
        asyncio.get_running_loop().create_task(self._check_owner(key, name))

        def stop() -> None:
            if self._watches.pop(key, None) is not None:
                self._release(name)

        return stop

    def _release(self, name: str) -> None:
        self._rules[name] -= 1
        if self._rules[name] == 0:
            del self._rules[name]
            self._match("RemoveMatch", name)

    def _match(self, member: str, name: str) -> None:
        rule = (
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{name}'"
        )
        message = method_call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", member, "s",
            [rule],
        )  # fmt: skip
        message.flags = MessageFlag.NO_REPLY_EXPECTED
        if self.bus.connected:
            self.bus.send(message)

    async def _check_owner(self, key: int, name: str) -> None:
        # The name may have left before the match rule was in place.
        try:
            reply = await call(
                self.bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "NameHasOwner", "s", [name],
            )  # fmt: skip
        except CallError:
            return
        if not reply.body[0]:
            self._gone(key)

    def _gone(self, key: int) -> None:
        entry = self._watches.pop(key, None)
        if entry is not None:
            self._release(entry[0])
            entry[1]()

    def _on_message(self, msg: Message) -> None:
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.member == "NameOwnerChanged"
            and msg.sender == "org.freedesktop.DBus"
            and msg.signature == "sss"
            and not msg.body[2]
        ):
            for key, (name, _) in list(self._watches.items()):
                if name == msg.body[0]:
                    self._gone(key)
