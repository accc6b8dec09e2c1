"""JPKI time: expiry dates, days left, milestones and the renewal window in Japan's calendar.

A JPKI certificate ends at 23:59:59 in Japan (14:59:59 UTC) on its last day. Everything a person
is told is counted in Asia/Tokyo calendar days ("expires in 30 days" all day long, 30 days
before that date) and calendar months (renewal opens 3 months before the expiry date on
today's card, 1 year before on the next-generation card), never in 24-hour periods from the
clock. Pure functions of the instants they are given: the caller owns the clock.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

#: Milestone names besides the day counts of the thresholds.
RENEWAL = "renewal"
EXPIRED = "expired"
#: Certificate states by date (``invalidated`` and ``unknown`` come from elsewhere).
VALID, EXPIRING = "valid", "expiring"


@functools.cache
def japan() -> dt.tzinfo:
    """Japan's time zone: Asia/Tokyo from the tz database, read on first use (the daemon is
    ready before); UTC+9 without a tz database (Japan has kept it without DST since 1951)."""
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo("Asia/Tokyo")
    except zoneinfo.ZoneInfoNotFoundError:
        return dt.timezone(dt.timedelta(hours=9), "JST")


def __getattr__(name: str) -> Any:
    """``JAPAN``: :func:`japan`, as a constant."""
    if name == "JAPAN":
        return japan()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def japan_date(when: dt.datetime) -> dt.date:
    """The calendar date in Japan at the instant ``when`` (an aware datetime)."""
    return when.astimezone(japan()).date()


def expiry_date(not_after: dt.datetime) -> dt.date:
    """The last day, in Japan, on which a certificate is valid."""
    return japan_date(not_after)


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Japanese calendar days from today to the expiry date: 0 on the last day, negative after
    it (−1 the day after)."""
    return (expiry_date(not_after) - japan_date(now)).days


def is_expired(not_after: dt.datetime, now: dt.datetime) -> bool:
    """Whether the certificate's validity has ended (notAfter itself is still valid)."""
    return now > not_after


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day of the month ``months`` calendar months earlier, or the last day of that
    month when it is shorter (3 months before 31 May is 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = _days_in_month(year, month + 1)
    return dt.date(year, month + 1, min(day.day, last))


def _days_in_month(year: int, month: int) -> int:
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return (following - dt.timedelta(days=1)).day


def renewal_opens(not_after: dt.datetime, renewal_months: int) -> dt.date:
    """The first day in Japan on which the certificate can be renewed."""
    return months_before(expiry_date(not_after), renewal_months)


def state(not_after: dt.datetime, renewal_months: int, now: dt.datetime) -> str:
    """``expired``, ``expiring`` (renewal is open) or ``valid`` at ``now``."""
    if is_expired(not_after, now):
        return EXPIRED
    if japan_date(now) >= renewal_opens(not_after, renewal_months):
        return EXPIRING
    return VALID


def milestones(
    not_after: dt.datetime, renewal_months: int, thresholds: Iterable[int]
) -> list[tuple[str, dt.date]]:
    """Every reminder before expiry and the day it falls due, earliest first: the day renewal
    opens (``renewal``), then each threshold (``"30"``: 30 days before the expiry date). On a
    tie the day count wins: it says more."""
    end = expiry_date(not_after)
    items = [(RENEWAL, renewal_opens(not_after, renewal_months))]
    items += [(str(days), end - dt.timedelta(days=days)) for days in set(thresholds)]
    return sorted(items, key=lambda item: (item[1], item[0] != RENEWAL))


def due_milestone(
    not_after: dt.datetime,
    renewal_months: int,
    thresholds: Iterable[int],
    shown: set[str],
    now: dt.datetime,
) -> tuple[str | None, set[str]]:
    """The one milestone to tell now (or None), and every milestone reached by now.

    Only the most urgent one reached is told, once: a certificate first seen 20 days before it
    expires gets the 30-day reminder, and the renewal one is passed over. Once expired, only
    ``expired`` is told.
    """
    schedule = milestones(not_after, renewal_months, thresholds)
    if is_expired(not_after, now):
        reached = {name for name, _ in schedule} | {EXPIRED}
        return (EXPIRED if EXPIRED not in shown else None), reached
    today = japan_date(now)
    due = [name for name, day in schedule if day <= today]
    if not due:
        return None, set()
    return (due[-1] if due[-1] not in shown else None), set(due)


def next_midnight(now: dt.datetime) -> dt.datetime:
    """The next 00:00 in Japan after ``now`` (aware, in Japan's zone)."""
    tomorrow = japan_date(now) + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(0, 0), japan())
