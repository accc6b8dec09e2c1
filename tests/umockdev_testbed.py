#!/usr/bin/python3
"""Line-driven umockdev testbed for tests/test_udev.py; run it with Debian's /usr/bin/python3.

It needs python3-gi and gir1.2-umockdev-1.0, which the project venv does not have, so the tests
drive this program over pipes instead of importing ``gi``. It re-executes itself under
``umockdev-wrapper``: ``Testbed`` checks parent devices through the faked /sys, and it only
sends uevents when it runs under the preload library.

Protocol: the first stdout line is the testbed's ``UMOCKDEV_DIR``. Then one command per stdin
line, each answered with one stdout line (a device's sys path, ``ok``, or ``error: ...``)::

    add-ccid NAME             CCID smart-card reader (interface class 0b), product string NAME
    add-ccid-bare NAME        the same without udevd's properties (no ID_USB_INTERFACES etc.)
    add-rcs380                Sony PaSoRi RC-S380 (054c:06c1, vendor-specific interface)
    add-keyboard              USB HID keyboard
    add-usb VVVV:PPPP CC NAME any USB device with one interface of class CC (hex)
    remove PATH               "remove" uevents for PATH's interface and PATH, then delete it

Adding sends "add" uevents for the device and then its interface, like the kernel.

How the uevents reach *another* process: a process started with
``LD_PRELOAD=libumockdev-preload.so.0`` and the same ``UMOCKDEV_DIR`` gets each
``AF_NETLINK``/``NETLINK_KOBJECT_UEVENT`` socket it binds turned into a Unix datagram socket at
``$UMOCKDEV_DIR/event<fd>``. ``Testbed.uevent()`` (which ``add_device`` calls under the preload)
sends a libudev-format message to every ``$UMOCKDEV_DIR/event[0-9]*`` socket, and the preload
makes ``recvmsg`` look as if it came from udevd. Sockets bound after an event miss it.

EOF on stdin ends the program; the testbed's finalizer deletes the directory.
"""

from __future__ import annotations

import os
import sys

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

BUS = 1
PRELOAD = "libumockdev-preload.so"


class Bed:
    """Adds USB devices to a testbed, each on a fresh port of bus 1."""

    def __init__(self) -> None:
        self.testbed = UMockdev.Testbed.new()
        self.port = 0
        self.interfaces: dict[str, str] = {}  # device sys path -> its interface's sys path
        # The root hub a real kernel would have; keeps the device paths realistic.
        self.hub = self.testbed.add_device(
            "usb",
            f"usb{BUS}",
            None,
            ["idVendor", "1d6b", "idProduct", "0002", "bDeviceClass", "09", "product", "Hub"],
            ["DEVTYPE", "usb_device", "PRODUCT", "1d6b/2/515", "ID_USB_INTERFACES", ":090000:"],
        )
        if not self.hub:
            raise RuntimeError("cannot add the root hub")

    def add_usb(
        self,
        vendor: int,
        product: int,
        name: str,
        iface: tuple[int, int, int],
        db_model: str = "",
        udevd: bool = True,
    ) -> str:
        """Add a usb_device with one usb_interface child; ``udevd`` adds udevd's properties."""
        self.port += 1
        devnum = self.port + 1
        sysname = f"{BUS}-{self.port}"
        cls, sub, proto = iface
        props = [
            "DEVTYPE", "usb_device",
            "PRODUCT", f"{vendor:x}/{product:x}/100",
            "TYPE", "0/0/0",
            "BUSNUM", f"{BUS:03d}",
            "DEVNUM", f"{devnum:03d}",
            "DEVNAME", f"/dev/bus/usb/{BUS:03d}/{devnum:03d}",
        ]  # fmt: skip
        if udevd:
            props += [
                "ID_VENDOR_ID", f"{vendor:04x}",
                "ID_MODEL_ID", f"{product:04x}",
                "ID_MODEL", name.replace(" ", "_").replace("/", "_"),
                "ID_USB_INTERFACES", f":{cls:02x}{sub:02x}{proto:02x}:",
            ]  # fmt: skip
            if db_model:
                props += ["ID_MODEL_FROM_DATABASE", db_model]
        dev = self.testbed.add_device(
            "usb",
            sysname,
            self.hub,
            [
                "idVendor", f"{vendor:04x}",
                "idProduct", f"{product:04x}",
                "product", name,
                "bDeviceClass", "00",
                "bNumInterfaces", " 1",
                "busnum", str(BUS),
                "devnum", str(devnum),
            ],
            props,
        )  # fmt: skip
        if not dev:
            raise RuntimeError(f"cannot add {sysname}")
        iface_dev = self.testbed.add_device(
            "usb",
            f"{sysname}:1.0",
            dev,
            [
                "bInterfaceNumber", "00",
                "bInterfaceClass", f"{cls:02x}",
                "bInterfaceSubClass", f"{sub:02x}",
                "bInterfaceProtocol", f"{proto:02x}",
            ],
            [
                "DEVTYPE", "usb_interface",
                "PRODUCT", f"{vendor:x}/{product:x}/100",
                "INTERFACE", f"{cls}/{sub}/{proto}",
            ],
        )  # fmt: skip
        if not iface_dev:
            raise RuntimeError(f"cannot add {sysname}:1.0")
        self.interfaces[dev] = iface_dev
        return dev

    def remove(self, path: str) -> None:
        """Announce removal (interface first, as the kernel does), then drop the sysfs tree."""
        if path not in self.interfaces:
            raise KeyError(f"not a device added here: {path}")
        self.testbed.uevent(self.interfaces.pop(path), "remove")
        self.testbed.uevent(path, "remove")
        self.testbed.remove_device(path)


def handle(bed: Bed, line: str) -> str:
    cmd, _, arg = line.partition(" ")
    if cmd == "add-ccid":
        return bed.add_usb(0x08E6, 0x3437, arg or "CCID Reader", (0x0B, 0, 0))
    if cmd == "add-ccid-bare":
        return bed.add_usb(0x08E6, 0x3438, arg or "CCID Reader", (0x0B, 0, 0), udevd=False)
    if cmd == "add-rcs380":
        return bed.add_usb(0x054C, 0x06C1, "RC-S380/P", (0xFF, 0xFF, 0xFF), "RC-S380")
    if cmd == "add-keyboard":
        return bed.add_usb(0x046D, 0xC31C, "USB Keyboard", (0x03, 0x01, 0x01), "Keyboard K120")
    if cmd == "add-usb":
        ids, cls, name = arg.split(" ", 2)
        vendor, product = (int(x, 16) for x in ids.split(":"))
        return bed.add_usb(vendor, product, name, (int(cls, 16), 0, 0))
    if cmd == "remove" and arg:
        bed.remove(arg)
        return "ok"
    raise ValueError(f"unknown command {line!r}")


def main() -> int:
    if PRELOAD not in os.environ.get("LD_PRELOAD", ""):
        os.execvp("umockdev-wrapper", ["umockdev-wrapper", sys.executable, *sys.argv])
    bed = Bed()
    print(bed.testbed.get_root_dir(), flush=True)
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        try:
            answer = handle(bed, line)
        except Exception as exc:  # answer and keep serving; the test decides
            answer = f"error: {type(exc).__name__}: {exc}"
        print(answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
