"""The digest source a document signature exports on the bus for the daemon (``digest-from``).

Once the signing password is verified, the daemon calls ``Digest(certificate, hash)`` on the
object the caller named; the caller answers with the digest of the document that names that
certificate, in the same card transaction: one VERIFY and one signature per document.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from dbus_next import Message, MessageType
from dbus_next.aio import MessageBus

from mncd.api import DIGEST_INTERFACE

#: Object paths this process exports for ``digest-from`` (one per signature).
_DIGEST_PATHS = itertools.count(1)
DIGEST_PATH_PREFIX = "/io/github/mncd/client/digest"
REFUSED = DIGEST_INTERFACE + ".Error.Refused"


class DigestSource:
    """Answers the daemon's one ``Digest`` call on a new object path with ``digest_for``; an
    exception of ``digest_for`` is kept in :attr:`failure` (the daemon is told it was refused)."""

    def __init__(
        self,
        bus: MessageBus,
        owner: Callable[[], Awaitable[str]],
        digest_for: Callable[[bytes], Awaitable[bytes]],
        hash_name: str,
    ) -> None:
        self.bus = bus
        self.path = f"{DIGEST_PATH_PREFIX}/{next(_DIGEST_PATHS)}"
        self.failure: list[BaseException] = []
        self._owner = owner  #: the unique name owning mncd's bus name, asked of the bus
        self._digest_for = digest_for
        self._hash_name = hash_name
        self._answered = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> DigestSource:
        self.bus.add_message_handler(self._on_message)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bus.remove_message_handler(self._on_message)

    def _on_message(self, message: Message) -> bool:
        if message.message_type != MessageType.METHOD_CALL or message.path != self.path:
            return False
        if (
            message.interface != DIGEST_INTERFACE
            or message.member != "Digest"
            or message.signature != "ays"
        ):
            self.bus.send(Message.new_error(message, REFUSED, "only Digest(ay, s) is served here"))
            return True
        task = asyncio.ensure_future(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(self, message: Message) -> None:
        try:
            # Only the daemon may ask (a unique name is never reused), and only once.
            if message.sender != await self._owner() or self._answered:
                self.bus.send(Message.new_error(message, REFUSED, "not asked by mncd"))
                return
        except Exception:  # the bus cannot say who owns mncd's name: refuse
            self.bus.send(Message.new_error(message, REFUSED, "cannot tell who asks"))
            return
        self._answered = True
        try:
            certificate, hash_name = bytes(message.body[0]), message.body[1]
            if hash_name != self._hash_name:
                raise ValueError(f"the daemon asked for {hash_name}, not {self._hash_name}")
            value = await self._digest_for(certificate)
            reply = Message.new_method_return(message, "ay", [bytes(value)])
        except Exception as exc:
            self.failure.append(exc)
            reply = Message.new_error(message, REFUSED, str(exc))
        self.bus.send(reply)
