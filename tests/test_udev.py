"""mncd.udev against real udev machinery faked by umockdev.

``tests/umockdev_testbed.py`` (Debian's python3 with gi) owns a umockdev testbed and adds or
removes USB devices on command, sending uevents. A child process with the venv's python runs
under ``umockdev-wrapper`` (libumockdev-preload) with the same ``UMOCKDEV_DIR``: its pyudev sees
the testbed's /sys, and its netlink monitor socket receives the testbed's uevents. The child runs
an asyncio loop with :class:`~mncd.daemon.udev.UdevReaderWatcher` and prints JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from mncd.daemon import udev

REPO = Path(__file__).resolve().parent.parent
TESTBED = REPO / "tests" / "umockdev_testbed.py"
SYSTEM_PYTHON = "/usr/bin/python3"
TIMEOUT = 15.0

CHILD = r"""
import asyncio, json, os, sys
import pyudev
from mncd.daemon.udev import UdevReaderWatcher, reader_from_device

def out(**msg):
    print(json.dumps(msg), flush=True)

def as_dict(reader):
    return reader._asdict() if reader is not None else None

def enumerate_usb():
    devices = pyudev.Context().list_devices(subsystem="usb")
    return {d.sys_path: as_dict(reader_from_device(d)) for d in devices}

async def main():
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_change(action, reader):
        in_loop = asyncio.get_running_loop() is loop
        out(event="change", action=action, reader=as_dict(reader), in_loop=in_loop)

    watcher = UdevReaderWatcher(loop, on_change)
    ok = watcher.start()
    out(event="started", ok=ok, present={p: as_dict(r) for p, r in watcher.present.items()})
    buffer = b""

    def on_stdin():
        nonlocal buffer
        data = os.read(0, 4096)
        if not data:
            loop.remove_reader(0)
            done.set()
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd == "enumerate":
                out(event="enumerate", devices=enumerate_usb())
            elif cmd == "present":
                out(event="present", present={p: as_dict(r) for p, r in watcher.present.items()})
            else:
                out(event="error", message=cmd)

    loop.add_reader(0, on_stdin)
    await done.wait()
    watcher.stop()
    out(event="stopped")

asyncio.run(main())
"""


class Lines:
    """Reads a pipe in a thread so the test can wait for each line with a timeout."""

    def __init__(self, stream: IO[str], what: str) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._what = what
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float = TIMEOUT) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self._what}: no line within {timeout}s") from None
        if line is None:
            raise AssertionError(f"{self._what}: output ended")
        return line

    def rest(self, timeout: float = TIMEOUT) -> list[str]:
        """All further lines until the pipe closes."""
        lines = []
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self._what}: did not end within {timeout}s") from None
            if line is None:
                return lines
            lines.append(line)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class UmockdevBed:
    """tests/umockdev_testbed.py in a subprocess."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(TESTBED)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = Lines(self.proc.stdout, "testbed")  # type: ignore[arg-type]
        self.root = self.lines.next()
        assert Path(self.root, "sys").is_dir(), self.root

    def cmd(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.lines.next()
        assert not answer.startswith("error"), f"{line}: {answer}"
        return answer

    def close(self) -> None:
        _stop(self.proc)


class Child:
    """The watcher in a venv python under umockdev-wrapper, printing JSON lines."""

    def __init__(self, bed: UmockdevBed, stderr: Path) -> None:
        env = dict(os.environ, UMOCKDEV_DIR=bed.root, PYTHONPATH=str(REPO))
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            ["umockdev-wrapper", sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.stderr = stderr
        self.lines = Lines(self.proc.stdout, f"watcher child (stderr in {stderr})")  # type: ignore[arg-type]
        self.started = self.next()
        assert self.started["event"] == "started", self.started
        assert self.started["ok"] is True, self.started

    def next(self) -> dict[str, Any]:
        return json.loads(self.lines.next())

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        reply = self.next()
        assert reply["event"] == cmd, reply
        return reply

    def finish(self) -> list[dict[str, Any]]:
        """Close stdin and return every line printed from now until the child exits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rest = [json.loads(line) for line in self.lines.rest()]
        assert self.proc.wait(timeout=TIMEOUT) == 0, self.stderr.read_text()
        return rest

    def close(self) -> None:
        _stop(self.proc)
        self._stderr.close()


@pytest.fixture
def bed() -> Iterator[UmockdevBed]:
    testbed = UmockdevBed()
    try:
        yield testbed
    finally:
        testbed.close()
    assert not Path(testbed.root).exists(), "testbed directory left behind"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    children: list[Child] = []

    def start(testbed: UmockdevBed) -> Child:
        child = Child(testbed, tmp_path / f"child{len(children)}.stderr")
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def reader(path: str, vendor: int, product: int, name: str, ccid: bool) -> dict[str, Any]:
    return {
        "sys_path": path,
        "vendor_id": vendor,
        "product_id": product,
        "name": name,
        "ccid": ccid,
    }


def change(action: str, reader: dict[str, Any]) -> dict[str, Any]:
    return {"event": "change", "action": action, "reader": reader, "in_loop": True}


def test_hotplug_reports_readers_only(bed: UmockdevBed, spawn: Any) -> None:
    child = spawn(bed)
    assert child.started["present"] == {}

    ccid_path = bed.cmd("add-ccid Test CCID Reader")
    rcs380_path = bed.cmd("add-rcs380")
    bed.cmd("add-keyboard")
    bed.cmd(f"remove {ccid_path}")

    ccid = reader(ccid_path, 0x08E6, 0x3437, "Test CCID Reader", ccid=True)
    rcs380 = reader(rcs380_path, 0x054C, 0x06C1, "RC-S380", ccid=False)
    # Every uevent arrives on one socket in order, so once the removal is reported the keyboard
    # events have been handled too: anything they caused would be in between.
    assert child.next() == change("add", ccid)
    assert child.next() == change("add", rcs380)
    assert child.next() == change("remove", ccid)
    assert child.ask("present")["present"] == {rcs380_path: rcs380}
    assert child.finish() == [{"event": "stopped"}]


def test_start_lists_present_readers_and_remove_uses_them(bed: UmockdevBed, spawn: Any) -> None:
    early = bed.cmd("add-ccid Early Reader")
    bed.cmd("add-keyboard")
    nfc = bed.cmd("add-rcs380")
    child = spawn(bed)
    early_reader = reader(early, 0x08E6, 0x3437, "Early Reader", ccid=True)
    nfc_reader = reader(nfc, 0x054C, 0x06C1, "RC-S380", ccid=False)
    assert child.started["present"] == {early: early_reader, nfc: nfc_reader}

    # Gone from sysfs by the time the watcher looks: the name comes from what start() saw.
    bed.cmd(f"remove {early}")
    assert child.next() == change("remove", early_reader)
    bed.cmd(f"remove {nfc}")
    assert child.next() == change("remove", nfc_reader)
    assert child.finish() == [{"event": "stopped"}]


def test_reader_without_udevd_properties_is_found_by_its_interface(
    bed: UmockdevBed, spawn: Any
) -> None:
    # No ID_USB_INTERFACES: the device's "add" comes before its interface exists, so the
    # interface's "add" is what shows it is a reader. It must be reported once.
    child = spawn(bed)
    path = bed.cmd("add-ccid-bare Bare Reader")
    bed.cmd("add-keyboard")
    bed.cmd(f"remove {path}")
    bare = reader(path, 0x08E6, 0x3438, "Bare Reader", ccid=True)
    assert child.next() == change("add", bare)
    assert child.next() == change("remove", bare)
    assert child.finish() == [{"event": "stopped"}]


def test_reader_from_device_classifies_testbed_devices(bed: UmockdevBed, spawn: Any) -> None:
    ccid = bed.cmd("add-ccid Test CCID Reader")
    bare = bed.cmd("add-ccid-bare Bare Reader")
    rcs380 = bed.cmd("add-rcs380")
    keyboard = bed.cmd("add-keyboard")
    rcs300 = bed.cmd("add-usb 054c:0dc9 0b RC-S300/P")
    acr122 = bed.cmd("add-usb 072f:2200 ff ACR122U PICC Interface")
    vendor_specific = bed.cmd("add-usb 1234:5678 ff Gadget")
    child = spawn(bed)

    devices = child.ask("enumerate")["devices"]
    hub = "/sys/devices/usb1"
    paths = [hub, ccid, bare, rcs380, keyboard, rcs300, acr122, vendor_specific]
    interfaces = {f"{p}/{p.rsplit('/', 1)[1]}:1.0" for p in paths[1:]}
    assert set(devices) == set(paths) | interfaces
    # Interfaces are never readers themselves, only whole USB devices.
    assert {p: devices[p] for p in interfaces} == dict.fromkeys(interfaces)
    assert {p: devices[p] for p in paths} == {
        hub: None,
        ccid: reader(ccid, 0x08E6, 0x3437, "Test CCID Reader", ccid=True),
        bare: reader(bare, 0x08E6, 0x3438, "Bare Reader", ccid=True),
        rcs380: reader(rcs380, 0x054C, 0x06C1, "RC-S380", ccid=False),
        keyboard: None,
        rcs300: reader(rcs300, 0x054C, 0x0DC9, "RC-S300/P", ccid=True),
        # Known by its ids although its interface is vendor-specific here.
        acr122: reader(acr122, 0x072F, 0x2200, "ACR122U PICC Interface", ccid=True),
        vendor_specific: None,
    }
    assert child.finish() == [{"event": "stopped"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (":0b0000:", True),
        (":030101:0b0000:", True),
        (":0B0000:", True),
        (":ffffff:", False),
        (":030101:030102:", False),
        (":000b00:", False),  # 0b as subclass, not class
        ("", False),
    ],
)
def test_usb_interfaces_property(value: str, expected: bool) -> None:
    assert udev.usb_interfaces_have_ccid(value) is expected


def test_start_without_udev_returns_false(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_libudev() -> None:
        raise ImportError("No library named udev")

    monkeypatch.setattr(udev.pyudev, "Context", no_libudev)
    loop = asyncio.new_event_loop()
    try:
        watcher = udev.UdevReaderWatcher(loop, lambda action, reader: None)
        with caplog.at_level(logging.WARNING, logger="mncd.daemon.udev"):
            assert watcher.start() is False
        assert "udev is not available" in caplog.text
        assert watcher.present == {}
        watcher.stop()  # harmless after a failed start
    finally:
        loop.close()
