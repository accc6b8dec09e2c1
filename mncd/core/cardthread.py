"""The card thread: every card operation runs here, one at a time, with the thread's own PC/SC
context.

pcsc-lite gives no per-command timeout, so an operation cannot be interrupted: a caller stops
waiting after :attr:`CardThread.timeout`, and the operation ends when the reader gives up or the
card is pulled. Operations queued behind it run after it, never beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mncd.card.errors import CardTimeoutError, PcscUnavailableError
from mncd.card.pcsc import PcscContext

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest a caller waits for one card operation. Real cards answer in seconds; a card or reader
#: that never answers must not hold callers forever (the operation itself cannot be interrupted:
#: it ends when the reader gives up or the card is pulled).
CARD_TIMEOUT = 60.0


class CardThread:
    """Runs card operations strictly one at a time on one thread."""

    def __init__(self, timeout: float = CARD_TIMEOUT) -> None:
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="card")
        self._local = threading.local()
        self._lock = asyncio.Lock()
        self._idle = threading.Event()  #: set while the card thread runs nothing
        self._idle.set()

    def close(self, grace: float = 0.0) -> bool:
        """Stop the card thread; True when it is idle within ``grace`` seconds.

        An operation under way is left to finish (it ends with a card reset), not interrupted.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        return self._idle.wait(grace)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(context, *args)`` on the card thread, after every operation before it.

        A caller that stops waiting (a timeout, a cancellation) takes its operation with it if it
        has not started; one under way runs to its end, and whatever carries its PIN
        (:class:`~mncd.core.pingate.PinTicket`) refuses to reach the card from then on."""
        async with self._lock:
            job = self._executor.submit(self._on_card_thread, fn, *args)
            result = asyncio.wrap_future(job)
            try:
                return await asyncio.wait_for(asyncio.shield(result), self.timeout)
            except (TimeoutError, asyncio.CancelledError) as exc:
                job.cancel()
                result.add_done_callback(_consume)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.warning("the card did not answer within %g s", self.timeout)
                raise CardTimeoutError("the card did not answer in time") from None

    def _context(self) -> PcscContext:
        context = getattr(self._local, "context", None)
        if context is None:
            context = PcscContext()
            self._local.context = context
        return context

    def _drop_context(self) -> None:
        context = getattr(self._local, "context", None)
        self._local.context = None
        if context is not None:
            with contextlib.suppress(Exception):  # the service is gone anyway
                context.release()

    def _on_card_thread(self, fn: Callable[..., T], *args: Any) -> T:
        # pcscd may have restarted since the last operation: check the context first and take a
        # fresh one if it is stale. The operation itself runs once and is never repeated here:
        # it may have sent a PIN already, and a PIN goes to the card only when a caller asks.
        self._idle.clear()
        try:
            try:
                context = self._context()
                context.list_readers()
            except PcscUnavailableError:
                self._drop_context()
                context = self._context()
            try:
                return fn(context, *args)
            except PcscUnavailableError:
                self._drop_context()
                raise
        finally:
            self._idle.set()


def _consume(future: asyncio.Future[Any]) -> None:
    """Take the outcome of an operation nobody waits for any more (no "never retrieved")."""
    if not future.cancelled():
        future.exception()
