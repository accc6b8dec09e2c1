"""The daemon under umockdev: USB readers appear and vanish, and GetStatus tells the user."""

from __future__ import annotations

import pytest
from busstack import Daemon, PrivateBus, status, wait_for
from test_udev import UmockdevBed


@pytest.fixture
def bed():
    testbed = UmockdevBed()
    yield testbed
    testbed.close()


def test_unsupported_reader_shows_in_status_and_ccid_reader_is_noticed(tmp_path, sandbox, bed):
    bus = PrivateBus(tmp_path)
    daemon = Daemon(bus, sandbox.env, tmp_path / "state")
    daemon.start(extra_env={"UMOCKDEV_DIR": bed.root}, wrapper=["umockdev-wrapper"])
    try:
        assert status(bus.address)["unsupported_readers"] == []
        rcs380 = bed.cmd("add-rcs380")
        names = wait_for(lambda: status(bus.address)["unsupported_readers"], "the RC-S380")
        assert len(names) == 1 and "RC-S380" in names[0]
        ccid = bed.cmd("add-ccid Test CCID Reader")
        wait_for(lambda: "reader plugged in: Test CCID Reader" in daemon.log, "the CCID reader")
        assert len(status(bus.address)["unsupported_readers"]) == 1  # CCID readers are fine
        bed.cmd(f"remove {ccid}")
        wait_for(lambda: "unplugged: Test CCID Reader" in daemon.log, "the CCID reader leaving")
        bed.cmd(f"remove {rcs380}")
        wait_for(lambda: status(bus.address)["unsupported_readers"] == [], "the RC-S380 leaving")
        # pcscd's readers are untouched by the fake USB devices.
        assert status(bus.address)["readers"] == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    finally:
        daemon.stop()
        bus.stop()
    assert "Traceback" not in daemon.log
