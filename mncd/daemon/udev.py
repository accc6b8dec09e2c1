"""Watches USB smart-card readers through udev, next to the PC/SC monitor.

pcscd only shows readers it has a driver for. udev sees every USB device, so the daemon learns
(a) when a reader comes or goes, to make the PC/SC monitor list readers again, and (b) when a
reader is plugged in that pcscd will not expose, such as the Sony PaSoRi RC-S380 (an NFC reader
that is not CCID and needs a separate driver on Linux; the RC-S300 is CCID).

The netlink socket is watched with ``loop.add_reader``: no thread and no polling interval.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyudev

from mncd.core.events import ReaderDevice

log = logging.getLogger(__name__)

CCID_CLASS = 0x0B
# Actions after which a device may newly be a reader: "bind" follows "add" when a driver
# attaches, "change" may bring udev properties (hwdb) that "add" lacked.
ADD_ACTIONS = frozenset({"add", "bind", "change"})
MAX_EVENTS_PER_WAKEUP = 64


@dataclass(frozen=True)
class KnownReader:
    name: str
    ccid: bool


# NFC readers recognised by vendor:product even without a smart-card interface.
KNOWN_READERS: dict[tuple[int, int], KnownReader] = {
    (0x054C, 0x06C1): KnownReader("Sony PaSoRi RC-S380", ccid=False),
    (0x054C, 0x06C3): KnownReader("Sony PaSoRi RC-S380", ccid=False),
    (0x054C, 0x0DC8): KnownReader("Sony PaSoRi RC-S300", ccid=True),
    (0x054C, 0x0DC9): KnownReader("Sony PaSoRi RC-S300", ccid=True),
    # Speaks PC/SC through pcscd's CCID driver (with its own pseudo-APDUs).
    (0x072F, 0x2200): KnownReader("ACS ACR122U", ccid=True),
}


def _hex(value: str | bytes | None) -> int | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return None
    try:
        return int(value.strip(), 16)
    except ValueError:
        return None


def _attr(device: pyudev.Device, name: str) -> str | None:
    """A sysfs attribute as text, or None (also when the device is gone from sysfs)."""
    try:
        value = device.attributes.get(name)
    except (OSError, UnicodeError):
        return None
    if value is None:
        return None
    text = value.decode("utf-8", "replace").strip()
    return text or None


def _ids(device: pyudev.Device) -> tuple[int, int] | None:
    props = device.properties
    vendor = _hex(props.get("ID_VENDOR_ID")) or _hex(_attr(device, "idVendor"))
    product = _hex(props.get("ID_MODEL_ID")) or _hex(_attr(device, "idProduct"))
    if vendor is None or product is None:
        # The kernel's own PRODUCT=vid/pid/bcdDevice (hex, no padding), present in every event.
        parts = props.get("PRODUCT", "").split("/")
        if len(parts) >= 2:
            vendor, product = _hex(parts[0]), _hex(parts[1])
    if vendor is None or product is None:
        return None
    return vendor, product


def usb_interfaces_have_ccid(value: str) -> bool:
    """Whether udev's ``ID_USB_INTERFACES`` (e.g. ``:0b0000:030101:``) lists a class 0x0B."""
    return any(len(item) == 6 and _hex(item[:2]) == CCID_CLASS for item in value.split(":"))


def _interface_classes(device: pyudev.Device) -> Iterable[int]:
    # ``children`` are all descendants: on a hub, those of the devices behind it too.
    for child in device.children:
        if os.path.dirname(child.sys_path) != device.sys_path:
            continue
        if child.device_type != "usb_interface":
            continue
        cls = _hex(_attr(child, "bInterfaceClass"))
        if cls is None:  # the kernel's INTERFACE=class/subclass/protocol, in decimal
            first = child.properties.get("INTERFACE", "").split("/")[0]
            cls = int(first) if first.isdigit() else None
        if cls is not None:
            yield cls


def _has_ccid_interface(device: pyudev.Device) -> bool:
    interfaces = device.properties.get("ID_USB_INTERFACES")
    if interfaces and usb_interfaces_have_ccid(interfaces):
        return True
    try:
        return CCID_CLASS in _interface_classes(device)
    except (OSError, pyudev.DeviceNotFoundError):
        return False


def reader_from_device(device: pyudev.Device) -> ReaderDevice | None:
    """Describe ``device`` if it is a USB smart-card reader (or a known NFC reader), else None.

    Only whole USB devices (DEVTYPE ``usb_device``) qualify, not their interfaces.
    """
    if device.subsystem != "usb" or device.device_type != "usb_device":
        return None
    ids = _ids(device)
    if ids is None:
        return None
    known = KNOWN_READERS.get(ids)
    ccid = _has_ccid_interface(device)
    if not ccid and known is None:
        return None
    props = device.properties
    name = (
        props.get("ID_MODEL_FROM_DATABASE")
        or _attr(device, "product")
        or props.get("ID_MODEL")
        or (known.name if known else None)
        or f"USB reader {ids[0]:04x}:{ids[1]:04x}"
    )
    return ReaderDevice(
        sys_path=device.sys_path,
        vendor_id=ids[0],
        product_id=ids[1],
        name=name,
        ccid=ccid or (known is not None and known.ccid),
    )


def list_readers() -> list[ReaderDevice]:
    """The USB smart-card readers udev knows now (raises when udev cannot be used)."""
    return list(UdevReaderWatcher._scan(pyudev.Context()).values())


class UdevReaderWatcher:
    """Keeps :attr:`present` up to date from udev and reports changes with ``on_change``.

    ``on_change(action, reader)`` runs on the loop thread; ``action`` is ``"add"`` or
    ``"remove"``. Call :meth:`start` and :meth:`stop` from the loop thread.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[str, ReaderDevice], None],
    ) -> None:
        self._loop = loop
        self._on_change = on_change
        self.present: dict[str, ReaderDevice] = {}
        self._context: pyudev.Context | None = None
        self._monitor: pyudev.Monitor | None = None
        self._fd: int | None = None

    def start(self) -> bool:
        """List the readers present now, then follow udev; False (logged) if udev is unusable."""
        try:
            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context)
            monitor.filter_by("usb")
            # Listen before listing, so nothing plugged in meanwhile is missed.
            monitor.start()
            self.present = self._scan(context)
            fd = monitor.fileno()
            self._loop.add_reader(fd, self._on_readable)
        except Exception as exc:  # ImportError (no libudev), OSError (no netlink), ...
            log.warning("udev is not available, reader hotplug is not watched: %s", exc)
            return False
        if not os.path.exists("/run/udev/control") and "UMOCKDEV_DIR" not in os.environ:
            log.info("udevd does not seem to run here; reader hotplug events may not arrive")
        self._context, self._monitor, self._fd = context, monitor, fd
        log.debug("udev: %d reader(s) present", len(self.present))
        return True

    def stop(self) -> None:
        """Stop watching; dropping the monitor closes its socket."""
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._fd = None
        self._monitor = None
        self._context = None

    @staticmethod
    def _scan(context: pyudev.Context) -> dict[str, ReaderDevice]:
        found: dict[str, ReaderDevice] = {}
        for device in context.list_devices(subsystem="usb", DEVTYPE="usb_device"):
            reader = reader_from_device(device)
            if reader is not None:
                found[reader.sys_path] = reader
        return found

    def _on_readable(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        # A bounded batch; the loop calls again while the socket stays readable.
        for _ in range(MAX_EVENTS_PER_WAKEUP):
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: list again
                    log.warning("udev events were lost; listing readers again")
                    self._resync()
                    continue
                log.warning("udev monitor failed, reader hotplug is no longer watched: %s", exc)
                self.stop()
                return
            if device is None:
                return
            self._handle(device)

    def _handle(self, device: pyudev.Device) -> None:
        action = device.action
        if action == "remove":
            # Attributes are gone by now; what we knew about it is in ``present``.
            reader = self.present.pop(device.sys_path, None)
            if reader is not None:
                self._emit("remove", reader)
            return
        if action not in ADD_ACTIONS:
            return
        target: pyudev.Device | None = device
        if device.device_type == "usb_interface":
            # Without udev's ID_USB_INTERFACES the device's own "add" comes before its
            # interfaces exist; an interface showing up is the next chance to classify it.
            try:
                target = device.find_parent("usb", "usb_device")
            except (OSError, pyudev.DeviceNotFoundError):
                target = None
        if target is None or target.sys_path in self.present:
            return
        try:
            reader = reader_from_device(target)
        except (OSError, pyudev.DeviceNotFoundError) as exc:
            log.debug("udev: cannot inspect %s: %s", target.sys_path, exc)
            return
        if reader is not None:
            self.present[reader.sys_path] = reader
            self._emit("add", reader)

    def _resync(self) -> None:
        if self._context is None:
            return
        now = self._scan(self._context)
        before, self.present = self.present, now
        for path, reader in before.items():
            if path not in now:
                self._emit("remove", reader)
        for path, reader in now.items():
            if path not in before:
                self._emit("add", reader)

    def _emit(self, action: str, reader: ReaderDevice) -> None:
        log.debug("udev: reader %s: %s", action, reader)
        try:
            self._on_change(action, reader)
        except Exception:
            log.exception("reader %s handler failed for %s", action, reader.sys_path)
