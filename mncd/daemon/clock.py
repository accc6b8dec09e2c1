"""The daemon's wall clock, and a watch that wakes it when the date in Japan changes.

Certificates expire by Japan's calendar (see :mod:`mncd.jpki.calendar`), so the daemon looks
again at midnight in Japan, and whenever the wall clock jumps: set by hand or by NTP, or after
a suspend (asyncio sleeps on the monotonic clock, which stops while the machine sleeps). A
jump shows as a change in the difference between the wall and the monotonic clock.

Test hook: ``$MNCD_TEST_CLOCK`` names a file holding an ISO 8601 instant (``2027-02-07T09:00:00
+09:00``). The daemon's "now" is then that instant plus the time elapsed since the daemon read
it; writing a new instant into the file moves the daemon's clock there, and the watch looks at
the file every :data:`TEST_TICK` seconds. The system clock is never touched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from mncd.jpki import calendar

log = logging.getLogger(__name__)

#: How often the watch compares the wall and the monotonic clock.
TICK = 60.0
#: The same with a test clock file, so that tests need not wait.
TEST_TICK = 0.2
#: A change of the wall-minus-monotonic difference larger than this is a jump.
JUMP_TOLERANCE = 2.0


class Clock:
    """The wall clock as an aware UTC datetime; a file's instant when one is given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._text = ""
        self._anchor: tuple[dt.datetime, float] | None = None
        if path is not None:
            self.refresh()

    @classmethod
    def from_environment(cls) -> Clock:
        """The system clock, or the test clock that ``$MNCD_TEST_CLOCK`` names."""
        path = os.environ.get("MNCD_TEST_CLOCK")
        return cls(Path(path) if path else None)

    @property
    def tick(self) -> float:
        return TEST_TICK if self.path is not None else TICK

    def now(self) -> dt.datetime:
        if self._anchor is None:
            return dt.datetime.now(dt.UTC)
        instant, monotonic = self._anchor
        return instant + dt.timedelta(seconds=time.monotonic() - monotonic)

    def offset(self) -> float:
        """Seconds between the wall clock and the monotonic clock (constant unless it jumps)."""
        return self.now().timestamp() - time.monotonic()

    def refresh(self) -> None:
        """Read the test clock file again (nothing for the system clock)."""
        if self.path is None:
            return
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if self._anchor is None:
                log.warning("test clock %s unreadable (%s); using the system clock", self.path, exc)
            return
        if text == self._text:
            return
        try:
            instant = dt.datetime.fromisoformat(text)
        except ValueError:
            log.warning("test clock %s does not hold an ISO 8601 instant; ignored", self.path)
            return
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.UTC)
        self._text = text
        self._anchor = (instant.astimezone(dt.UTC), time.monotonic())
        log.info("test clock: now is %s", self._anchor[0].isoformat())


async def watch_dates(clock: Clock, on_change: Callable[[], None]) -> None:
    """Call ``on_change`` after midnight in Japan and after every jump of the wall clock."""
    offset = clock.offset()
    today = calendar.japan_date(clock.now())
    while True:
        now = clock.now()
        until_midnight = (calendar.next_midnight(now) - now).total_seconds()
        await asyncio.sleep(max(0.0, min(until_midnight + 0.5, clock.tick)))
        clock.refresh()
        jump = clock.offset() - offset
        offset = clock.offset()
        date = calendar.japan_date(clock.now())
        if abs(jump) > JUMP_TOLERANCE:
            log.info("the wall clock jumped by %+.0f s (set, or a resume); checking again", jump)
        elif date == today:
            continue
        else:
            log.info("a new day in Japan (%s); checking again", date.isoformat())
        today = date
        on_change()
