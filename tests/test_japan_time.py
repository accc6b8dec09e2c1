"""Expiry in Japan's calendar, with the daemon's clock under the test's control.

The card's certificates end as real ones do, at 23:59:59 in Japan (14:59:59 UTC). The daemon's
clock ($MNCD_TEST_CLOCK) is moved through the months while it runs: every reminder comes on its
day in Japan, whatever the hour, once; every change of state is announced on the bus.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

from busstack import BUS_NAME, Daemon, status, wait_for
from test_daemon_dbus import wait_state
from test_daemon_notices import summaries

from mncd.daemon.clock import Clock

LABEL = "Your user-authentication certificate"
#: (the daemon's "now", the reminder it gives then, the certificate's state, days left)
STEPS = [
    ("2030-12-09T23:58:00+09:00", None, "valid", 91),
    ("2030-12-10T00:00:05+09:00", f"{LABEL} can now be renewed", "expiring", 90),  # 3 months
    ("2031-01-20T15:00:00+09:00", None, "expiring", 49),
    ("2031-02-08T00:00:05+09:00", f"{LABEL} expires in 30 days", "expiring", 30),
    ("2031-03-02T23:58:00+09:00", None, "expiring", 8),
    ("2031-03-03T23:58:00+09:00", f"{LABEL} expires in 7 days", "expiring", 7),
    ("2031-03-09T00:00:05+09:00", f"{LABEL} expires in 1 day", "expiring", 1),
    ("2031-03-10T23:58:00+09:00", None, "expiring", 0),  # still valid: its last day
    ("2031-03-11T00:00:05+09:00", f"{LABEL} has expired", "expired", -1),
]


def monitor(address: str, path) -> subprocess.Popen:
    """gdbus as a third-party listener to every signal mncd sends."""
    return subprocess.Popen(
        ["gdbus", "monitor", "--address", address, "--dest", BUS_NAME],
        stdout=path.open("w"),
        stderr=subprocess.DEVNULL,
    )


def set_clock(path, instant: str) -> None:
    """Move the daemon's clock (written whole: the daemon never reads half an instant)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(instant)
    os.replace(temporary, path)


def checks(daemon: Daemon) -> int:
    return daemon.log.count("notices checked")


def test_reminders_fall_on_japans_days_and_each_change_is_announced_once(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    clock = tmp_path / "clock"
    set_clock(clock, "2030-11-20T12:00:00+09:00")
    env = {**sandbox.env, "LANG": "C", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "",
           "MNCD_TEST_CLOCK": str(clock)}  # fmt: skip
    daemon = Daemon(bus, env, tmp_path / "state").start()
    signals = tmp_path / "signals.txt"
    listener = monitor(bus.address, signals)
    try:
        card = insert_card(name="dated-card", not_before="2026-03-11", not_after="2031-03-10")
        s = wait_state(bus.address, "card-present")
        not_after = dt.datetime.fromtimestamp(s["auth"]["not_after"], dt.UTC)
        assert not_after.time() == dt.time(14, 59, 59)  # 23:59:59 in Japan, as on real cards
        assert s["auth"]["days_left"] == 110 and s["auth"]["state"] == "valid"
        card.remove()  # in a drawer from now on: the cache speaks for it
        wait_state(bus.address, "no-card")
        expected: list[str] = []
        for instant, reminder, state, days in STEPS:
            before = checks(daemon)
            set_clock(clock, instant)
            wait_for(
                lambda d=days, st=state: (
                    (a := status(bus.address)["auth"])["days_left"] == d and a["state"] == st
                ),
                f"{days} days left at {instant}",
            )
            wait_for(lambda b=before: checks(daemon) > b, f"a notice check at {instant}")
            if reminder is not None:
                expected.append(reminder)
                count = len(expected)
                wait_for(lambda n=count: len(summaries(server)) >= n, reminder)
            assert summaries(server) == expected, instant

        # A restart at the same moment repeats nothing.
        daemon.stop()
        before = checks(daemon)
        daemon.start(extra_env={"MNCD_TEST_CLOCK": str(clock)})
        wait_for(lambda: checks(daemon) > before, "a check after the restart")
        assert summaries(server) == expected
    finally:
        daemon.stop()
        listener.terminate()
        listener.wait(10)
    text = signals.read_text()
    changes = re.findall(r"CertificateStatusChanged \('(\w+)', '(\w+)'\)", text)
    # unknown -> valid when the card was first read; then each change the days brought, once.
    assert changes == [("auth", "valid"), ("auth", "expiring"), ("auth", "expired")], text
    properties = re.findall(r"'CertificateStates': <\{'auth': '(\w+)'", text)
    assert "expiring" in properties and "expired" in properties
    received = server.received()
    assert received[-1]["urgency"] == "CRITICAL"  # expired
    assert "Traceback" not in daemon.log


def test_the_reminder_comes_at_midnight_in_japan_without_a_clock_jump(
    desktop, sandbox, insert_card, tmp_path
):
    bus, server = desktop
    clock = tmp_path / "clock"
    set_clock(clock, "2031-02-07T12:00:00+09:00")
    env = {**sandbox.env, "LANG": "C", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "",
           "MNCD_TEST_CLOCK": str(clock)}  # fmt: skip
    daemon = Daemon(bus, env, tmp_path / "state").start()
    try:
        insert_card(name="midnight-card", not_before="2026-03-11", not_after="2031-03-10")
        s = wait_state(bus.address, "card-present")
        # On 7 February the renewal reminder is due (opened 10 December), the 30-day one not.
        wait_for(lambda: summaries(server), "the renewal reminder")
        assert summaries(server) == [f"{LABEL} can now be renewed"]
        assert s["auth"]["days_left"] == 31
        before = checks(daemon)
        set_clock(clock, "2031-02-07T23:59:58+09:00")  # two seconds before the 30-day mark
        wait_for(lambda: checks(daemon) > before, "a check after the clock was set")
        assert len(summaries(server)) == 1
        # The clock runs on by itself into 8 February in Japan: nothing sets it.
        wait_for(lambda: len(summaries(server)) == 2, "the 30-day reminder after midnight")
        assert summaries(server)[1] == f"{LABEL} expires in 30 days"
        assert status(bus.address)["auth"]["days_left"] == 30
    finally:
        daemon.stop()
    assert "a new day in Japan (2031-02-08)" in daemon.log
    assert "Traceback" not in daemon.log


def test_the_test_clock_moves_only_the_daemons_now(tmp_path):
    """The hook changes nothing unless it is set (unit level: no daemon needed)."""
    assert Clock().path is None and Clock.from_environment().path is None
    fake = tmp_path / "clock"
    fake.write_text("2031-03-11T00:00:05+09:00")
    controlled = Clock(fake)
    assert controlled.now().astimezone(dt.timezone(dt.timedelta(hours=9))).date() == dt.date(
        2031, 3, 11
    )
    fake.write_text("not a time")
    controlled.refresh()  # ignored, with a warning: the last good instant stays
    assert controlled.now().year == 2031
