"""JPKI time in Japan's calendar: real-profile notAfter values (14:59:59 UTC), every milestone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from mncd.jpki import calendar
from mncd.jpki.summary import CURRENT_CARD, NEXT_GENERATION, CertificateSummary

JST = ZoneInfo("Asia/Tokyo")
#: A real certificate's end: 2027-03-10 23:59:59 in Japan.
NOT_AFTER = dt.datetime(2027, 3, 10, 14, 59, 59, tzinfo=dt.UTC)
THRESHOLDS = (30, 7, 1)
MONTHS = CURRENT_CARD.renewal_months


def japan(day: str, time: str = "12:00:00") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=JST)


#: The first and the last second of a day in Japan, and some times between.
TIMES = ("00:00:00", "00:00:01", "08:59:59", "09:00:00", "14:59:59", "15:00:00", "23:59:59")


def test_the_expiry_date_is_the_day_in_japan():
    assert calendar.expiry_date(NOT_AFTER) == dt.date(2027, 3, 10)
    assert NOT_AFTER.astimezone(JST).time() == dt.time(23, 59, 59)


@pytest.mark.parametrize(
    ("day", "days", "milestone"),
    [
        ("2026-12-10", 90, "renewal"),  # 3 calendar months before (not 90 days: Dec-Mar is 90)
        ("2027-02-08", 30, "30"),
        ("2027-03-03", 7, "7"),
        ("2027-03-09", 1, "1"),
    ],
)
@pytest.mark.parametrize("time", TIMES)
def test_each_milestone_falls_on_its_whole_day_in_japan(day, days, milestone, time):
    now = japan(day, time)
    assert calendar.days_left(NOT_AFTER, now) == days
    assert calendar.due_milestone(NOT_AFTER, MONTHS, THRESHOLDS, set(), now)[0] == milestone
    # The same instant seen from any zone gives the same answer.
    elsewhere = now.astimezone(ZoneInfo("America/Los_Angeles"))
    assert calendar.days_left(NOT_AFTER, elsewhere) == days
    # One second before that day began in Japan, the milestone was not due yet.
    before = japan(day, "00:00:00") - dt.timedelta(seconds=1)
    assert calendar.due_milestone(NOT_AFTER, MONTHS, THRESHOLDS, set(), before)[0] != milestone


@pytest.mark.parametrize("time", TIMES)
def test_the_last_day_is_today_and_the_next_one_expired(time):
    last_day = japan("2027-03-10", time)
    assert calendar.days_left(NOT_AFTER, last_day) == 0
    assert calendar.state(NOT_AFTER, MONTHS, last_day) == "expiring"
    next_day = japan("2027-03-11", time)
    assert calendar.days_left(NOT_AFTER, next_day) == -1
    assert calendar.state(NOT_AFTER, MONTHS, next_day) == "expired"
    assert calendar.due_milestone(NOT_AFTER, MONTHS, THRESHOLDS, set(), next_day)[0] == "expired"


def test_renewal_opens_three_calendar_months_before():
    assert calendar.state(NOT_AFTER, MONTHS, japan("2026-12-09", "23:59:59")) == "valid"
    assert calendar.state(NOT_AFTER, MONTHS, japan("2026-12-10", "00:00:00")) == "expiring"
    # A 90-day window would have opened on 2026-12-10 too; at the end of May it would not:
    end_of_may = dt.datetime(2027, 5, 31, 14, 59, 59, tzinfo=dt.UTC)
    assert calendar.renewal_opens(end_of_may, 3) == dt.date(2027, 2, 28)  # 92 days before
    assert calendar.state(end_of_may, 3, japan("2027-02-28", "00:00:00")) == "expiring"
    assert calendar.state(end_of_may, 3, japan("2027-02-27", "23:59:59")) == "valid"


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        ("2027-03-10", 3, "2026-12-10"),
        ("2027-05-31", 3, "2027-02-28"),
        ("2028-05-31", 3, "2028-02-29"),
        ("2027-01-15", 3, "2026-10-15"),
        ("2036-02-29", 12, "2035-02-28"),
        ("2036-03-31", 1, "2036-02-29"),
    ],
)
def test_months_before(day, months, expected):
    assert calendar.months_before(dt.date.fromisoformat(day), months).isoformat() == expected


def test_the_next_generation_card_opens_renewal_a_year_before():
    not_after = dt.datetime(2036, 2, 29, 14, 59, 59, tzinfo=dt.UTC)
    assert NEXT_GENERATION.renewal_months == 12
    assert calendar.renewal_opens(not_after, 12) == dt.date(2035, 2, 28)
    assert calendar.state(not_after, 12, japan("2035-02-28", "00:00:00")) == "expiring"
    assert calendar.state(not_after, 12, japan("2035-02-27", "23:59:59")) == "valid"


def walk(days: list[str]) -> list[str | None]:
    """Milestones told as the same certificate is checked at noon on successive days."""
    shown: set[str] = set()
    out = []
    for day in days:
        milestone, reached = calendar.due_milestone(
            NOT_AFTER, MONTHS, THRESHOLDS, shown, japan(day)
        )
        out.append(milestone)
        shown |= reached
    return out


def test_each_milestone_once_then_expired_once():
    days = ["2026-12-01", "2026-12-10", "2027-01-20", "2027-02-08", "2027-02-20", "2027-03-03",
            "2027-03-05", "2027-03-09", "2027-03-10", "2027-03-11", "2027-03-20"]  # fmt: skip
    assert walk(days) == [
        None, "renewal", None, "30", None, "7", None, "1", None, "expired", None,
    ]  # fmt: skip


def test_first_seen_20_days_before_expiry_gives_the_30_day_reminder_only():
    assert walk(["2027-02-18", "2027-02-19", "2027-02-28"]) == ["30", None, None]


def test_first_seen_expired_gives_only_the_expired_reminder():
    assert walk(["2027-03-15", "2027-03-16"]) == ["expired", None]


def test_a_summary_counts_the_same_way():
    summary = CertificateSummary("1", "ab" * 32, "CN=x", NOT_AFTER - dt.timedelta(days=1800),
                                 NOT_AFTER, "rsa2048")  # fmt: skip
    assert summary.days_left(japan("2027-02-08", "00:00:00")) == 30
    assert summary.state(japan("2026-12-10", "00:00:00")) == "expiring"
    assert summary.generation is CURRENT_CARD


def test_next_midnight_is_japans():
    assert calendar.next_midnight(japan("2027-02-08", "23:59:59")) == japan(
        "2027-02-09", "00:00:00"
    )
    assert calendar.next_midnight(japan("2027-02-08", "00:00:00")) == japan(
        "2027-02-09", "00:00:00"
    )
