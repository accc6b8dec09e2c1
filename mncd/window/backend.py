"""What the window knows of the daemon, kept live: GetStatus and the PIN counters, refreshed
after every signal of the daemon. No GTK here: :class:`StatusWatch` lives on the window's asyncio
thread (:mod:`mncd.window.loop`), and the window draws what it hands on GTK's thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NamedTuple

from mncd import errors
from mncd.cli.errors import error_line
from mncd.client import ClientError, Event, MyNumberCard, PinStatus, Status

log = logging.getLogger(__name__)

#: Several signals in a row (a card inserted sends a few) make one refresh, this much later.
SETTLE = 0.15
#: While mncd cannot be reached, try again this often.
RETRY = 5.0
#: Reading the PIN counters failed (the card busy with a PIN dialog, just pulled): try again a
#: second later, at most this many times in a row.
PIN_RETRIES = 3


class Snapshot(NamedTuple):
    """What the window shows: the status, the live PIN counters (None when there is no card
    to read them from), and what went wrong, in words ("" when nothing did)."""

    status: Status | None = None
    pins: PinStatus | None = None
    problem: str = ""


class StatusWatch:
    """The daemon's status, live: ``on_change(snapshot)`` after every change. Used on the
    asyncio thread only (``on_change`` is called there)."""

    def __init__(self, on_change: Callable[[Snapshot], None], address: str | None = None) -> None:
        self.on_change = on_change
        self.address = address
        self.card: MyNumberCard | None = None
        self.snapshot = Snapshot()
        self._stop: Callable[[], None] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pin_failures = 0

    async def start(self) -> None:
        """Connect, listen to the daemon's signals, and take the first snapshot."""
        try:
            self.card = await MyNumberCard.connect(self.address)
            self._stop = await self.card.subscribe(self._heard)
        except (ClientError, errors.MncdError, OSError) as exc:
            self._publish(Snapshot(problem=error_line(exc)))
            self._later(RETRY, self._restart)
            return
        await self.refresh()

    def _restart(self) -> None:
        self.card = None
        self._spawn(self.start())

    def _heard(self, event: Event) -> None:
        log.debug("heard %s", event.name)
        self._pin_failures = 0
        self.schedule()

    def schedule(self, delay: float = SETTLE) -> None:
        """Refresh soon; several requests in a row make one refresh."""
        if self._pending is None:
            self._later(delay, lambda: self._spawn(self.refresh()))

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        def fire() -> None:
            self._pending = None
            callback()

        self._pending = asyncio.get_running_loop().call_later(delay, fire)

    async def refresh(self) -> None:
        """GetStatus, and the PIN counters read from the card when one is in the reader."""
        if self.card is None:
            return
        try:
            status = await self.card.get_status()
        except (ClientError, errors.MncdError) as exc:
            self._publish(Snapshot(problem=error_line(exc)))
            self._later(RETRY, lambda: self._spawn(self.refresh()))
            return
        pins: PinStatus | None = None
        if status.state == "card-present":
            try:
                pins = await self.card.get_pin_status()
                self._pin_failures = 0
            except (ClientError, errors.MncdError) as exc:  # taken out meanwhile, busy, ...
                log.debug("no PIN counters: %s", exc)
                self._pin_failures += 1
                if self._pin_failures <= PIN_RETRIES:
                    self.schedule(1.0)
        elif status.state == "reading":
            self.schedule(0.5)  # read in a moment: its certificates and counters then
        self._publish(Snapshot(status, pins))

    def _publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.on_change(snapshot)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._stop is not None:
            with suppress(Exception):
                self._stop()
        self._stop = None
        card, self.card = self.card, None
        if card is not None:
            await card.close()
