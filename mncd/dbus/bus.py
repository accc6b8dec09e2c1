"""Every workaround of dbus-next's internals, in one place.

dbus-next 0.2.3 is the library's final release (pinned exactly in ``pyproject.toml``), so these
patches cannot break under a new version; each names the private attribute it touches and why.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from dbus_next import BusType, DBusError, Message, MessageFlag, Variant

# Private: the header layout constants and the marshaller, for a reply marshalled in advance.
from dbus_next._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.auth import Authenticator, AuthExternal
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


#: The error of a call whose own error could not be made (no traceback, path or secret).
INTERNAL_ERROR = DBusError("org.freedesktop.DBus.Error.Failed", "internal error")


class ExportedInterface(ServiceInterface):
    """A ServiceInterface served by :class:`SafeMessageBus`: it says how errors reach callers
    and which replies it marshals in advance."""

    def error_reply(self, method: str, exc: BaseException) -> DBusError:
        """The D-Bus error a caller gets for ``exc`` (no traceback, path or secret)."""
        return INTERNAL_ERROR

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
        fds = list(msg.unix_fds or ()) if self.negotiate_unix_fd else []
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


def close_fds(fds: Sequence[int]) -> None:
    """Close file descriptors received from the bus."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class UnixFdAuth(AuthExternal):
    """EXTERNAL authentication that asks for Unix fd passing and goes on without it when the bus
    declines (dbus-next's raises AuthError then, and the bus could not be used at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.agreed = False  #: whether the bus agreed to pass file descriptors

    # Private: Authenticator._receive_line(line) answers each line of the bus's side of the
    # authentication; AuthExternal.negotiating_fds is set once it has sent NEGOTIATE_UNIX_FD.
    def _receive_line(self, line: str) -> str:
        response = line.split(" ", 1)[0]
        if response == "ERROR" and self.negotiating_fds:
            return "BEGIN"
        if response == "AGREE_UNIX_FD":
            self.agreed = True
        return super()._receive_line(line)


class _CloexecSocket:
    """The bus socket as dbus-next's unmarshaller reads it (``recvmsg``), with the descriptors
    received close-on-exec: a program the daemon starts (pinentry) never inherits one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recvmsg(self, bufsize: int, ancbufsize: int) -> tuple[bytes, list[Any], int, Any]:
        return self.sock.recvmsg(bufsize, ancbufsize, socket.MSG_CMSG_CLOEXEC)


class _Replier:
    """The ``send_reply`` a handler gets: it records that the call was answered, and answers an
    exception with a typed error. It stands in for dbus-next's private SendReply, whose
    ``send_error(exc)`` dbus-next's property handlers call, and which puts the traceback in the
    reply."""

    def __init__(self, bus: SafeMessageBus, msg: Message, send_reply: Any) -> None:
        self.bus = bus
        self.msg = msg
        self.send_reply = send_reply
        self.sent = False

    def __call__(self, reply: Message) -> None:
        self.send_reply(reply)
        self.sent = True

    def send_error(self, exc: BaseException) -> None:
        if not self.sent:
            error = exc if isinstance(exc, DBusError) else self.bus.error_for(self.msg, exc)
            self(error._as_message(self.msg))


class SafeMessageBus(MessageBus):
    """dbus-next's asyncio bus, with method handlers that always reply and never leak or mis-log
    errors, a writer that waits for a full socket instead of dropping the connection, and Unix
    fd passing where the bus offers it (every descriptor received is closed once its message
    is handled)."""

    def __init__(
        self,
        bus_address: str | None = None,
        bus_type: BusType = BusType.SESSION,
        auth: Authenticator | None = None,
        negotiate_unix_fd: bool = True,
    ) -> None:
        # Fd passing lets the bus send a caller's pidfd (GetConnectionCredentials' ProcessFD);
        # dbus-next asks for it only when told, and then fails where the bus declines.
        if negotiate_unix_fd and auth is None:
            auth = UnixFdAuth()
        super().__init__(bus_address, bus_type, auth, negotiate_unix_fd)
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
        #: Method handlers still running (the loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[Any]] = set()
        # For tests: a small kernel send buffer makes a flood fill the socket on any machine
        # (private: MessageBus._sock is the connected socket).
        send_buffer = os.environ.get("MNCD_BUS_SEND_BUFFER")
        if send_buffer and send_buffer.isdigit():
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(send_buffer))

    @property
    def unix_fds(self) -> bool:
        """Whether the bus passes Unix file descriptors on this connection (once connected)."""
        # Private: MessageBus._negotiate_unix_fd says whether messages carry descriptors.
        return bool(self._negotiate_unix_fd)

    # Private: MessageBus._authenticate() authenticates on connect(). Where the bus declined fd
    # passing, nothing may be read or sent as if it had agreed: MessageBus._negotiate_unix_fd,
    # the writer's copy of it and the unmarshaller (MessageBus._unmarshaller) follow the bus.
    async def _authenticate(self) -> None:
        await super()._authenticate()
        if self._negotiate_unix_fd and not getattr(self._auth, "agreed", True):
            log.info("the bus does not pass file descriptors")
            self._negotiate_unix_fd = False
            self._writer.negotiate_unix_fd = False
            self._unmarshaller = self._create_unmarshaller()

    # Private: MessageBus._create_unmarshaller() makes the reader of the next message; with fd
    # passing it reads the socket itself with recvmsg (Unmarshaller.sock), here close-on-exec.
    def _create_unmarshaller(self) -> Any:
        unmarshaller = super()._create_unmarshaller()
        if unmarshaller.sock is not None:
            unmarshaller.sock = _CloexecSocket(unmarshaller.sock)
        return unmarshaller

    # Private: MessageBus._message_reader() is the loop's reader of the bus socket; it
    # dispatches every message available at once. Ours stops as soon as the writer stops
    # reading, so one burst of calls cannot queue much more than the high-water mark, and
    # closes the descriptors of each message once it is handled.
    def _message_reader(self) -> None:
        try:
            while self._writer.reading:
                # Private: MessageBus._unmarshaller reads one message at a time from the socket
                # (the descriptors received with it in Unmarshaller.unix_fds).
                if not self._unmarshaller.unmarshall():
                    break
                message = self._unmarshaller.message
                self._unmarshaller = self._create_unmarshaller()
                self._dispatch(message)
        except Exception as exc:
            self._finalize(exc)

    def _dispatch(self, message: Message) -> None:
        """Handle ``message``, then close the descriptors it brought: a handler that keeps one
        duplicates it while the message is handled (see :func:`call`)."""
        # Private: MessageBus._on_message(msg) hands a message to its handlers.
        if not message.unix_fds:
            self._on_message(message)
            return
        received = list(message.unix_fds)
        try:
            self._on_message(message)
        finally:
            close_fds(received)

    # Private: MessageBus._finalize(err) ends the connection (dbus-next's reader calls it at
    # EOF, our writer on a broken socket); the writer then fails what it holds and stays closed,
    # and the descriptors of a message cut off by the end are closed.
    def _finalize(self, err: Exception | None = None) -> None:
        self._writer.close(err)
        close_fds(self._unmarshaller.unix_fds)
        self._unmarshaller.unix_fds.clear()
        super()._finalize(err)

    # Private: MessageBus._find_message_handler(msg) picks the handler of an incoming call
    # (dbus-next answers UnknownMethod when there is none). Each handler it gives is wrapped so
    # that the call gets a reply whatever fails, without the traceback dbus-next would put in
    # it (and log): the errors dbus-next's own handlers raise (unknown property, read-only
    # property, ...) as they are, anything else as the object's internal error.
    def _find_message_handler(self, msg: Message) -> Any:
        try:
            handler = self._handler_for(msg)
        except Exception as exc:
            handler = _answer_with(self.error_for(msg, exc))
        if handler is None:
            return None

        def always_replying(msg: Message, send_reply: Any) -> None:
            replier = _Replier(self, msg, send_reply)
            try:
                handler(msg, replier)
            except Exception as exc:
                try:
                    replier.send_error(exc)
                except Exception as error:
                    log.error("answering %s.%s failed", msg.interface, msg.member, exc_info=error)
                    send_reply(INTERNAL_ERROR._as_message(msg))

        return always_replying

    def _handler_for(self, msg: Message) -> Any:
        handler = super()._find_message_handler(msg)
        if handler is not None:
            return handler
        # One of our methods called with the wrong argument types gets a clear error from the
        # interface, not UnknownMethod. Private: MessageBus._path_exports maps object paths to
        # exported interfaces, and ServiceInterface._get_methods lists an interface's methods
        # with their signatures.
        for interface in self._path_exports.get(msg.path, []):
            if not isinstance(interface, ExportedInterface) or interface.name != msg.interface:
                continue
            for method in ServiceInterface._get_methods(interface):
                if method.name == msg.member and not method.disabled:
                    return _answer_with(
                        interface.wrong_arguments(method.name, method.in_signature, msg.signature)
                    )
        return None

    def error_for(self, msg: Message, exc: BaseException) -> DBusError:
        """The error a call to an object of this bus gets for an exception no handler
        answered: the exported object's own (:meth:`ExportedInterface.error_reply`)."""
        for interface in self._path_exports.get(msg.path, []):
            if isinstance(interface, ExportedInterface):
                try:
                    return interface.error_reply(msg.member or "", exc)
                except Exception as error:
                    exc = error
        log.error("answering %s.%s failed", msg.interface, msg.member, exc_info=exc)
        return INTERNAL_ERROR

    # Private: MessageBus._make_method_handler(interface, method) builds the function that
    # answers a call. dbus-next's own sends tracebacks to callers and logs every D-Bus error as
    # an unhandled exception; ours maps errors through the interface, runs async methods as
    # tasks that know their caller (kept until done), and sends pre-marshalled replies where
    # the interface has one.
    def _make_method_handler(self, interface: ServiceInterface, method: Any) -> Any:
        if not isinstance(interface, ExportedInterface):
            return super()._make_method_handler(interface, method)

        def failed(msg: Message, exc: BaseException) -> Message:
            try:
                return interface.error_reply(method.name, exc)._as_message(msg)
            except Exception as error:
                log.error("answering %s failed", method.name, exc_info=error)
                return INTERNAL_ERROR._as_message(msg)

        def send(msg: Message, reply: Message) -> None:
            if not self.connected or msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                return
            try:
                self.send(reply)
            except Exception as exc:  # a reply that cannot be marshalled: an error instead
                try:
                    self.send(failed(msg, exc))
                except Exception:
                    self.send(INTERNAL_ERROR._as_message(msg))

        def reply_to(msg: Message, outcome: Callable[[], Any]) -> None:
            try:
                # Private: ServiceInterface._fn_result_to_body turns a method's return value
                # into a reply body (as dbus-next's own handler does).
                body, fds = ServiceInterface._fn_result_to_body(
                    outcome(), method.out_signature_tree
                )
                reply = Message.new_method_return(msg, method.out_signature, body, fds)
            except Exception as exc:
                reply = failed(msg, exc)
            except asyncio.CancelledError as exc:
                reply = failed(msg, exc)
            send(msg, reply)

        body_of = interface.premarshalled(method.name)
        if body_of is not None:

            def premarshalled_handler(msg: Message, send_reply: Any) -> None:
                try:
                    reply: Message = PreMarshalledReply(msg, method.out_signature, body_of())
                except Exception as exc:
                    reply = failed(msg, exc)
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
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
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
    keep_fds: bool = False,
) -> Message:
    """Call another service's method; the reply, or :class:`CallError`.

    The bus closes the file descriptors a reply brings once it has handled it; with
    ``keep_fds`` the reply holds duplicates instead, which the caller closes.
    """
    message = method_call(destination, path, interface, member, signature, body)
    if not bus.connected:
        raise CallError("ConnectionError", "the bus connection is closed")
    future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    def on_reply(reply: Message | None, error: Exception | None) -> None:
        if future.done():
            return  # no longer awaited: the bus closes the reply's descriptors
        if reply is None:
            future.set_exception(error or ConnectionError("the bus connection is closed"))
            return
        if keep_fds and reply.unix_fds:
            try:
                reply.unix_fds = _duplicates(reply.unix_fds)
            except OSError as exc:
                future.set_exception(exc)
                return
        future.set_result(reply)

    try:
        # Private: BaseMessageBus._call(msg, callback) sends a call and keeps the callback for
        # its reply in BaseMessageBus._method_return_handlers (by serial). Unlike
        # MessageBus.call(), the callback sees the reply while the bus handles it, so its
        # descriptors can be kept; and it is removed when we stop waiting (dbus-next would
        # keep it for good after a timeout).
        bus._call(message, on_reply)
        async with asyncio.timeout(timeout):
            reply = await future
    except BaseException as exc:
        if keep_fds and future.done() and not future.cancelled() and not future.exception():
            close_fds(future.result().unix_fds)  # a reply that came too late to be read
        if isinstance(exc, TimeoutError):
            raise CallError("Timeout", f"no reply to {member}") from exc
        if isinstance(exc, Exception):  # a broken or closed connection
            raise CallError(type(exc).__name__, str(exc)) from exc
        raise
    finally:
        bus._method_return_handlers.pop(message.serial, None)
    if reply.message_type == MessageType.ERROR:
        if keep_fds:
            close_fds(reply.unix_fds)
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CallError(reply.error_name or "Error", text)
    return reply


def _duplicates(fds: Sequence[int]) -> list[int]:
    """Duplicates of ``fds`` (close-on-exec), all or none."""
    kept: list[int] = []
    try:
        for fd in fds:
            kept.append(os.dup(fd))
    except OSError:
        close_fds(kept)
        raise
    return kept


class NameWatcher:
    """Tells when a name leaves the bus (``NameOwnerChanged`` with no new owner)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        #: Watches by a number of their own: never by the callback's id(), as one callback may
        #: watch twice and an id is given again once its object is gone.
        self._watches: dict[int, tuple[str, Callable[[], None]]] = {}
        self._keys = itertools.count()
        self._rules: dict[str, int] = {}
        #: Owner checks still running (the loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()
        bus.add_message_handler(self._on_message)

    def watch(self, name: str, on_gone: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_gone`` once when ``name`` has no owner (at once if it has none now);
        returns a function that stops watching."""
        key = next(self._keys)
        self._watches[key] = (name, on_gone)
        if self._rules.get(name, 0) == 0:
            self._match("AddMatch", name)
        self._rules[name] = self._rules.get(name, 0) + 1
        task = asyncio.get_running_loop().create_task(self._check_owner(key, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
