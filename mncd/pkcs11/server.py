"""The sockets applications' ``p11-kit-client.so`` connects to, in ``$XDG_RUNTIME_DIR/mncd/``:
one per door of :mod:`mncd.pkcs11.location` (all tokens, the log-in token, the signing token).

The directory is 0700 and each socket 0600; a peer of another user is refused (SO_PEERCRED), and
the process on the other end is named in PIN dialogs by what the kernel vouches for. Each
connection is one application: it speaks the version it offers (up to
:data:`~mncd.pkcs11.wire.PROTOCOL_VERSION`), then frames; requests are answered as they finish,
so a call waiting for a PIN dialog or a slot event does not hold up the application's other
threads. A malformed request gets a CKR and changes nothing; a frame that cannot be delimited
ends its connection only. When an application goes, its calls are cancelled (an open dialog
closes, nothing is sent to the card) and its PINs are wiped.

Connections are bounded: :data:`MAX_CONNECTIONS` at once (only this user's processes can
connect, so that is the bound per user). A connection is idle while none of its calls is under
way; a call waiting in a PIN dialog or in C_WaitForSlotEvent keeps it busy. One that has not
initialized (connected and silent, or finalized) is closed after :data:`IDLE_TIMEOUT` idle. An
initialized application is not timed out: p11-kit's client never reconnects, so its every later
call would fail until the application restarts. At the bound, the connection idle longest (one
not initialized first) is closed to make room; when every connection has a call under way, the
newcomer is refused. Each is logged, naming the application and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from mncd.core.callers import Caller, read_process
from mncd.core.events import CoreEvent, PinEvent, StateChanged, Subscription
from mncd.core.manager import CardManager
from mncd.pkcs11 import wire
from mncd.pkcs11.constants import CKR
from mncd.pkcs11.context import ModuleContext
from mncd.pkcs11.errors import to_ckr
from mncd.pkcs11.location import DOORS, Door, address
from mncd.pkcs11.module import Pkcs11Module
from mncd.pkcs11.sessions import LOGIN_TIMEOUT
from mncd.pkcs11.tokens import SlotTable

log = logging.getLogger(__name__)

#: Most applications connected at once, and calls one may have waiting at once.
MAX_CONNECTIONS = 64
MAX_PENDING_CALLS = 16
#: Seconds a connection that has not initialized may stay idle.
IDLE_TIMEOUT = 60.0
#: getsockopt option for a pidfd of the peer (Linux 6.5); older kernels: the pid alone.
SO_PEERPIDFD = 77
_UCRED = struct.Struct("3i")


class SocketDirectoryError(Exception):
    """The socket's directory is not ours alone."""


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=False, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SocketDirectoryError(f"{directory} is not a directory of this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def _answers(path: Path) -> bool:
    """Whether a server listens on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class Pkcs11Server:
    """Serves p11-kit's RPC protocol over the daemon's manager."""

    def __init__(
        self,
        manager: CardManager,
        directory: Path,
        login_timeout: float = LOGIN_TIMEOUT,
        idle_timeout: float | None = None,
        doors: tuple[Door, ...] = DOORS,
    ) -> None:
        self.manager = manager
        self.directory = directory
        self.doors = doors
        self.idle_timeout = idle_timeout if idle_timeout is not None else _idle_timeout()
        self.slots = SlotTable(manager)
        #: What an application's module may use of the daemon, by the door it came through.
        self.contexts = {
            door: ModuleContext(manager, self.slots.view(door.keys, door.login_free), login_timeout)
            for door in doors
        }
        self.modules: set[Pkcs11Module] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._served: set[Connection] = set()
        self._seen: dict[int, object] = {}
        self._subscription: Subscription | None = None

    def path(self, door: Door) -> Path:
        return self.directory / door.name

    async def start(self) -> None:
        """Listen on every door's socket (stale ones from a crashed daemon are replaced)."""
        _private_directory(self.directory)
        for door in self.doors:
            path = self.path(door)
            if (path.is_socket() or path.is_symlink()) and _answers(path):
                raise SocketDirectoryError(f"another mncd already serves {path}")
        try:
            for door in self.doors:
                await self._listen(door)
        except BaseException:
            await self.close()
            raise
        self._seen = self._slot_states()
        self._subscription = self.manager.events.subscribe(self._heard)

    async def _listen(self, door: Door) -> None:
        path = self.path(door)
        if path.is_socket() or path.is_symlink():
            path.unlink()  # left behind by a daemon that crashed
        umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(
                lambda reader, writer: self._connected(door, reader, writer),
                path=str(path),
                limit=wire.MAX_BODY,
            )
        finally:
            os.umask(umask)
        self._servers.append(server)
        os.chmod(path, 0o600)
        tokens = ", ".join(sorted(door.keys))
        log.info("PKCS#11 (p11-kit RPC) served at %s (tokens: %s)", address(path), tokens)

    def _heard(self, event: CoreEvent) -> None:
        """The core's events: slots follow the cards, logins follow the PINs."""
        if isinstance(event, StateChanged):
            self.refresh()
        elif isinstance(event, PinEvent):
            for module in list(self.modules):
                module.heard(event)

    async def close(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        for server in self._servers:
            server.close()
        listened = len(self._servers)
        self._servers = []
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)
        for door in self.doors[:listened]:
            with contextlib.suppress(OSError):
                self.path(door).unlink()

    def refresh(self) -> None:
        """The manager's state changed: tell every application which slots changed."""
        states = self._slot_states()
        changed = {
            slot_id
            for slot_id in states.keys() | self._seen.keys()
            if states.get(slot_id) != self._seen.get(slot_id)
        }
        self._seen = states
        for module in list(self.modules):
            module.refresh(changed)

    def _slot_states(self) -> dict[int, object]:
        return {slot.id: slot.card for slot in self.slots.slots()}

    # -- connections -----------------------------------------------------------------------

    async def _connected(
        self, door: Door, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            sock = writer.get_extra_info("socket")
            caller = self._peer(sock) if sock is not None else None
            if caller is None or not self._make_room(caller):
                return
            connection = Connection(self, door, caller, reader, writer)
            self._served.add(connection)
            try:
                await connection.serve()
            finally:
                self._served.discard(connection)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _make_room(self, caller: Caller) -> bool:
        """Whether ``caller`` may connect: below the bound, or once the connection idle longest
        (one not initialized first) is closed for it; not when every one has a call under way."""
        open_now = [c for c in self._served if not c.closing]
        if len(open_now) < MAX_CONNECTIONS:
            return True
        idle = [c for c in open_now if c.idle_since is not None]
        if not idle:
            log.warning(
                "PKCS#11: %d applications connected, each with a call under way (%d at most); "
                "refused %s", len(open_now), MAX_CONNECTIONS, caller,
            )  # fmt: skip
            return False
        longest = min(idle, key=lambda c: (c.module.initialized, c.idle_since))
        assert longest.idle_since is not None
        idle_for = asyncio.get_running_loop().time() - longest.idle_since
        longest.close(
            f"idle for {idle_for:.1f} s, closed to make room for {caller} "
            f"({MAX_CONNECTIONS} connections at most)",
            logging.WARNING,
        )
        return True

    def _peer(self, sock: socket.socket) -> Caller | None:
        """The process on the other end, if it is of this user."""
        try:
            pid, uid, _gid = _UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError as exc:
            log.warning("PKCS#11: cannot tell who connected (%s); refused", exc)
            return None
        if uid != os.getuid():
            log.warning("PKCS#11: a process of user %d connected; refused", uid)
            return None
        pidfd = None
        with contextlib.suppress(OSError):
            pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        try:
            return read_process(pid, pidfd)
        finally:
            if pidfd is not None:
                os.close(pidfd)


class Connection:
    """One application's connection: handshake, frames, its calls."""

    def __init__(
        self,
        server: Pkcs11Server,
        door: Door,
        caller: Caller,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.door = door
        self.caller = caller
        self.reader = reader
        self.writer = writer
        self.module = Pkcs11Module(server.contexts[door], caller)
        self.pending: set[asyncio.Task[None]] = set()
        self.closing = False
        self._loop = asyncio.get_running_loop()
        #: When the last request came or the last call ended (loop time).
        self.last_call = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def idle_since(self) -> float | None:
        """Since when it is idle (loop time); None while a call of its is under way."""
        return None if self.pending else self.last_call

    def close(self, why: str, level: int = logging.INFO) -> None:
        """End the connection now, saying why (it is idle: no call is cut short)."""
        self.closing = True
        log.log(level, "PKCS#11: the connection of %s ended: %s", self.caller, why)
        self.writer.transport.abort()

    def _check_idle(self) -> None:
        """Close the connection if it has not initialized and has been idle long enough."""
        if self.closing:
            return
        timeout = self.server.idle_timeout
        since = self.idle_since
        left = timeout
        if since is not None and not self.module.initialized:
            left = since + timeout - self._loop.time()
            if left <= 0:
                self.close(f"not initialized, no call for {timeout:g} s")
                return
        self._idle_timer = self._loop.call_later(left, self._check_idle)

    async def serve(self) -> None:
        self._idle_timer = self._loop.call_later(self.server.idle_timeout, self._check_idle)
        try:
            await self._serve()
        finally:
            self.closing = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    async def _serve(self) -> None:
        offered = (await self.reader.readexactly(1))[0]
        self.writer.write(bytes([min(offered, wire.PROTOCOL_VERSION)]))
        log.info("PKCS#11 application connected: %s (%s)", self.caller, self.door.name)
        self.server.modules.add(self.module)
        try:
            while True:
                header = await self.reader.readexactly(wire.HEADER.size)
                message_id, options_length, body_length = wire.HEADER.unpack(header)
                if options_length > wire.MAX_OPTIONS or body_length > wire.MAX_BODY:
                    # The frame cannot be skipped safely: answer, then end this connection.
                    log.warning("PKCS#11: %s sent an oversized frame; disconnected", self.caller)
                    self._reply(message_id, wire.Writer.error(CKR.ARGUMENTS_BAD))
                    await self.writer.drain()
                    return
                await self.reader.readexactly(options_length)
                body = await self.reader.readexactly(body_length)
                self.last_call = self._loop.time()
                self._dispatch(message_id, body)
                await self.writer.drain()
        finally:
            log.info("PKCS#11 application disconnected: %s", self.caller)
            self.server.modules.discard(self.module)
            for task in list(self.pending):
                task.cancel()
            if self.pending:
                await asyncio.wait(self.pending)
            self.module.close()

    def _reply(self, message_id: int, body: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.frame(message_id, body))

    def _dispatch(self, message_id: int, body: bytes) -> None:
        """Answer one request now, or when its card work or dialog is done."""
        call_name = "request"
        try:
            request = wire.Reader(body)
            call_name = request.call.name
            answer = self.module.handler(request.call)(request)
        except Exception as exc:
            self._reply(message_id, wire.Writer.error(_ckr(exc, call_name)))
            return
        if isinstance(answer, wire.Writer):
            self._reply(message_id, answer.body())
            return
        if len(self.pending) >= MAX_PENDING_CALLS:
            answer.close()
            self._reply(message_id, wire.Writer.error(CKR.FUNCTION_FAILED))
            return
        task = asyncio.get_running_loop().create_task(self._finish(message_id, call_name, answer))
        self.pending.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        self.last_call = self._loop.time()

    async def _finish(
        self, message_id: int, call_name: str, answer: Coroutine[Any, Any, wire.Writer]
    ) -> None:
        try:
            writer = await answer
        except asyncio.CancelledError:
            return  # the application is gone: nobody to answer
        except Exception as exc:
            self._reply(message_id, wire.Writer.error(_ckr(exc, call_name)))
            return
        self._reply(message_id, writer.body())


def _idle_timeout() -> float:
    """Seconds an uninitialized connection may stay idle (``$MNCD_PKCS11_IDLE_TIMEOUT``, for
    tests)."""
    try:
        return max(0.1, float(os.environ["MNCD_PKCS11_IDLE_TIMEOUT"]))
    except (KeyError, ValueError):
        return IDLE_TIMEOUT


def _ckr(exc: Exception, call_name: str) -> int:
    rv = exc.rv if isinstance(exc, wire.WireError) else to_ckr(exc, call_name)
    log.debug("PKCS#11 %s: %s (%s)", call_name, CKR(rv).name, exc)
    return rv
