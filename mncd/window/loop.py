"""asyncio beside GTK's main loop, for Debian 12's PyGObject (3.42, which has no ``gi.events``).

The window's talk with the daemon (:mod:`mncd.client`, dbus-next) runs on an asyncio event loop
in a thread of its own; GTK stays on the main thread. :meth:`AsyncLoop.submit` starts a coroutine
there and hands its result back to GTK's thread with ``GLib.idle_add``, and :meth:`AsyncLoop.to_gtk`
does so for any callback: every widget is touched on GTK's thread only. A job is a
:class:`concurrent.futures.Future`: ``cancel()`` from GTK's thread cancels its task on the asyncio
thread (which then runs its ``finally``: a job's own bus connection is closed there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from gi.repository import GLib

log = logging.getLogger(__name__)

#: How long :meth:`AsyncLoop.stop` waits for each closing coroutine (closing a bus connection).
CLOSE_TIMEOUT = 5.0

Job = concurrent.futures.Future


class AsyncLoop:
    """An asyncio event loop in a worker thread, started by :meth:`start`, ended by :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mncd-window-asyncio", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            # Stopped: what is left is cancelled, and its clean-up (a connection's close) runs.
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """``function(*args)`` soon on the asyncio thread (from any thread)."""
        self.loop.call_soon_threadsafe(function, *args)

    def submit(
        self,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
        finished: Callable[[], None] | None = None,
    ) -> Job[Any]:
        """Run ``work()`` on the asyncio thread; then, on GTK's thread, ``finished()`` (also after
        a cancel) and ``done(result)`` or ``failed(exception)`` (not after a cancel)."""

        async def run() -> Any:
            return await work()

        job = asyncio.run_coroutine_threadsafe(run(), self.loop)

        def deliver() -> bool:
            if finished is not None:
                finished()
            if job.cancelled():
                return GLib.SOURCE_REMOVE
            exc = job.exception()
            if exc is not None:
                log.debug("job failed: %r", exc)
                if failed is not None:
                    failed(exc)
            elif done is not None:
                done(job.result())
            return GLib.SOURCE_REMOVE

        job.add_done_callback(lambda _job: GLib.idle_add(deliver))
        return job

    @staticmethod
    def to_gtk(function: Callable[..., Any]) -> Callable[..., None]:
        """``function`` made callable from any thread: it then runs on GTK's thread."""

        def later(*args: Any) -> None:
            def once() -> bool:
                function(*args)
                return GLib.SOURCE_REMOVE

            GLib.idle_add(once)

        return later

    def stop(self, *closing: Callable[[], Awaitable[Any]]) -> None:
        """Run each ``closing()`` on the asyncio thread and wait for it (the client connections
        are closed there), cancel what still runs, stop the loop and join its thread."""
        if not self.running:
            return
        for close in closing:

            async def run(close: Callable[[], Awaitable[Any]] = close) -> Any:
                return await close()

            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(run(), self.loop).result(CLOSE_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
