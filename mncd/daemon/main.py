"""``mncd``: wiring and the asyncio main loop.

Connects to the session bus, loads the cache, exports the interface, starts the PC/SC monitor
and waits for its first report (so the first answer is never a guess), owns the bus name, then
tells systemd it is ready. What only later work needs (the settings, udev, desktop notices, the
PKCS#11 server; PIN dialogs, caller lookup and the X.509 layer on first use) is imported and
started after that, before the first call is answered. Exits with status 0 on SIGTERM/SIGINT;
when the bus connection is lost it exits with :data:`BUS_LOST` so that systemd
(``Restart=on-failure``) starts it again, as D-Bus activation does on the next call.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbus_next import BusType
from dbus_next.constants import NameFlag, RequestNameReply

from mncd import __version__
from mncd.api import BUS_NAME, OBJECT_PATH, WINDOW_APP_ID
from mncd.core.cache import CardCache
from mncd.core.cardthread import CARD_TIMEOUT
from mncd.core.events import (
    CardInserted,
    CardRemoved,
    CertificateStateChanged,
    CoreEvent,
    PcscUnavailable,
    StateChanged,
)
from mncd.core.manager import CardManager
from mncd.daemon.clock import Clock, watch_dates
from mncd.daemon.monitor import PcscMonitor
from mncd.daemon.systemd import notify, setup_logging, watchdog_interval
from mncd.dbus.bus import NameWatcher, SafeMessageBus
from mncd.dbus.service import MyNumberCardInterface
from mncd.pkcs11.location import socket_path

if TYPE_CHECKING:
    import argparse

    from mncd.config import Config
    from mncd.pkcs11.server import Pkcs11Server

log = logging.getLogger("mncd")

#: How long an exit waits for a card operation under way (it ends with a card reset).
EXIT_GRACE = 10.0
#: Exit status when the connection to the session bus is lost (a failure: systemd restarts mncd).
BUS_LOST = 1
#: Longest the daemon waits for pcscd to tell the readers and cards present before it takes its
#: name (until then its answers would be guesses); pcscd started by its socket answers sooner.
SCAN_TIMEOUT = 5.0

STATUS_TEXT = {
    "pcsc-unavailable": "waiting for the PC/SC service (pcscd)",
    "no-reader": "no smart-card reader",
    "no-card": "no card inserted",
    "reading": "reading the card",
    "card-present": "My Number Card present",
    "unknown-card": "the card is not a My Number Card",
    "unreadable-card": "the card could not be read",
}


async def run(state_dir: Path | None = None) -> int:
    loop = asyncio.get_running_loop()
    try:
        bus = await SafeMessageBus(bus_type=BusType.SESSION).connect()
    except Exception as exc:
        log.error("cannot connect to the session bus: %s", exc)
        return 1

    cache = CardCache(state_dir)
    manager = CardManager(cache, timeout=_card_timeout())
    clock = Clock.from_environment()
    manager.clock = clock.now
    manager.gate.watch_caller = NameWatcher(bus).watch
    interface = MyNumberCardInterface(manager, bus)
    last_status = ""

    def state_changed() -> None:
        nonlocal last_status
        interface.refresh_properties()
        state = manager.state()
        if state != last_status:
            last_status = state
            log.info("state: %s", state)
            notify(f"STATUS={STATUS_TEXT.get(state, state)}")

    def tell(event: CoreEvent) -> None:
        """The core's events as the D-Bus interface and systemd hear them (the PKCS#11 server
        and the desktop notices subscribe on their own once started)."""
        if isinstance(event, StateChanged):
            state_changed()
        elif isinstance(event, CardInserted):
            interface.CardInserted(event.reader)
        elif isinstance(event, CardRemoved):
            interface.CardRemoved(event.reader)
        elif isinstance(event, CertificateStateChanged):
            interface.CertificateStatusChanged(event.which, event.state)

    manager.events.subscribe(tell)
    bus.export(OBJECT_PATH, interface)
    await manager.start()
    monitor = PcscMonitor(loop, manager.handle_event)
    monitor.start()
    manager.rescan = monitor.rescan
    scan_timeout = _scan_timeout()
    try:
        await asyncio.wait_for(manager.scanned.wait(), scan_timeout)
    except TimeoutError:
        # A pcscd that accepts and never answers: told as unavailable until it does.
        log.warning("pcscd did not answer within %g s; starting without it", scan_timeout)
        manager.handle_event(PcscUnavailable())

    reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        log.error("another mncd already owns %s on this bus", BUS_NAME)
        monitor.stop()
        manager.close()
        bus.disconnect()
        return 1
    log.info("mncd %s ready on the session bus as %s", __version__, BUS_NAME)
    notify("READY=1", f"STATUS={STATUS_TEXT.get(manager.state(), manager.state())}")

    # Later work, imported only now. Nothing above awaits between READY=1 and here, so no call
    # is answered before udev's readers are known and the notice center listens.
    from mncd.config import Config
    from mncd.daemon.udev import UdevReaderWatcher
    from mncd.desktop.alerts import NoticeCenter
    from mncd.desktop.notifications import DesktopNotifier
    from mncd.desktop.prompts import pin_dialogs
    from mncd.desktop.window_link import WindowLink

    config = Config.load()
    manager.gate.dialogs = pin_dialogs(config.pinentry)
    udev = UdevReaderWatcher(loop, manager.handle_usb_reader)
    if udev.start():
        manager.usb_readers.update(udev.present)
    window = WindowLink(bus)
    notifier = DesktopNotifier(
        bus,
        desktop_entry=WINDOW_APP_ID,
        on_action=window.on_action,
        ids_path=cache.root / "notifications.json",
        default_action=True,
    )
    window.notifier = notifier
    notice_center = NoticeCenter(manager, notifier, config, cache.root / "notices.json")
    pkcs11 = await _pkcs11_server(manager, config)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _test_hooks(loop)
    tasks = [
        loop.create_task(stop.wait()),
        loop.create_task(_disconnected(bus)),
    ]
    tasks.append(loop.create_task(watch_dates(clock, manager.recheck)))
    notice_center.schedule()
    interval = watchdog_interval()
    if interval:
        tasks.append(loop.create_task(_watchdog(interval)))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if tasks[1] in done:
        log.error("lost the session bus (%s); exiting with status %d", tasks[1].result(), BUS_LOST)
        status = BUS_LOST
    notify("STOPPING=1")
    for task in pending:
        task.cancel()
    if pkcs11 is not None:
        await pkcs11.close()
    udev.stop()
    monitor.stop()
    if bus.connected:
        bus.disconnect()
    if not await loop.run_in_executor(None, manager.close, EXIT_GRACE):
        # A card operation is stuck in the reader: do not wait for it (interpreter exit would
        # join its thread forever). Nothing is being written: cache writes are not on that thread.
        log.warning("a card operation is still blocked in the reader; exiting without it")
        logging.shutdown()
        os._exit(status)
    return status


async def _pkcs11_server(manager: CardManager, config: Config) -> Pkcs11Server | None:
    """The PKCS#11 server, started, unless turned off or its socket cannot be served."""
    if not config.pkcs11:
        return None
    path = socket_path()
    if path is None:
        log.warning("PKCS#11 is not served: XDG_RUNTIME_DIR is not set")
        return None
    from mncd.pkcs11.server import Pkcs11Server, SocketDirectoryError

    server = Pkcs11Server(manager, path.parent, config.pkcs11_login_timeout)
    try:
        await server.start()
    except (OSError, SocketDirectoryError) as exc:
        log.warning("PKCS#11 is not served: %s", exc)
        return None
    return server


def _scan_timeout() -> float:
    """Seconds to wait for pcscd's first report (``$MNCD_SCAN_TIMEOUT``, for tests)."""
    try:
        return max(0.1, float(os.environ["MNCD_SCAN_TIMEOUT"]))
    except (KeyError, ValueError):
        return SCAN_TIMEOUT


def _card_timeout() -> float:
    """Seconds a caller waits for one card operation (``$MNCD_CARD_TIMEOUT``, for tests)."""
    try:
        return max(0.1, float(os.environ["MNCD_CARD_TIMEOUT"]))
    except (KeyError, ValueError):
        return CARD_TIMEOUT


async def _disconnected(bus: SafeMessageBus) -> str:
    """Return once the bus connection has ended, however it ended, with why (dbus-next raises
    the error that ended it, e.g. EOFError when the bus daemon is gone)."""
    try:
        await bus.wait_for_disconnect()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return "disconnected"


async def _watchdog(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _user_service(executable: str | None) -> int:
    """Install (``executable``: a path, or '' for this mncd) or, with None, uninstall."""
    from mncd.daemon import install

    try:
        if executable is None:
            install.uninstall()
        else:
            install.install(Path(executable) if executable else None)
    except (install.InstallError, OSError) as exc:
        print(f"mncd: {exc}", file=sys.stderr)
        return 1
    return 0


def _test_hooks(loop: asyncio.AbstractEventLoop) -> None:
    """``$MNCD_TEST_HOOKS=1`` (tests only): SIGUSR2 hangs the main loop, as a deadlock would, so
    that the watchdog pings stop and systemd's watchdog has a hung daemon to deal with."""
    if os.environ.get("MNCD_TEST_HOOKS") != "1":
        return

    def hang() -> None:
        log.warning("test hook: SIGUSR2 received, the main loop hangs from now on")
        threading.Event().wait()

    loop.add_signal_handler(signal.SIGUSR2, hang)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.install_user_service is not None or args.uninstall_user_service:
        return _user_service(args.install_user_service)
    setup_logging(args.verbose)
    # A fatal signal (the watchdog's SIGABRT for a hung daemon) prints where every thread was to
    # stderr, which is the journal under systemd.
    faulthandler.enable()
    return asyncio.run(run(args.state_dir))


#: The options when none are given, as :func:`parser` has them.
NO_ARGUMENTS = {
    "state_dir": None,
    "verbose": False,
    "install_user_service": None,
    "uninstall_user_service": False,
}


def parse_arguments(argv: list[str]) -> Any:
    """The command line's options. Without arguments (how systemd and D-Bus activation start
    mncd) they are :data:`NO_ARGUMENTS` and argparse is not even loaded."""
    if not argv:
        return types.SimpleNamespace(**NO_ARGUMENTS)
    return parser().parse_args(argv)


def parser() -> argparse.ArgumentParser:
    """mncd's command line."""
    import gettext

    from mncd.i18n import DOMAIN, LOCALE_DIR
    from mncd.i18n import gettext as _
    from mncd.terminal import ArgumentParser

    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))  # argparse's own words, in the same language
    gettext.textdomain(DOMAIN)
    parser = ArgumentParser(
        prog="mncd",
        description=_("mncd, the My Number Card daemon of your desktop: programs use the card "
                      "through it. It is started for you (D-Bus activation or systemd)."),
    )  # fmt: skip
    parser.add_argument(
        "--state-dir", type=Path, metavar="DIR",
        help=_("where mncd keeps what it remembers of your cards (default: "
               "~/.local/state/mncd)"),
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help=_("log more (debugging)"))
    parser.add_argument(
        "--version", action="version", version=f"mncd {__version__}",
        help=_("show the version and exit"),
    )  # fmt: skip
    service = parser.add_mutually_exclusive_group()
    service.add_argument(
        "--install-user-service", nargs="?", const="", metavar="PATH",
        help=_("install the systemd user unit and D-Bus activation file running this mncd "
               "(or PATH), then exit"),
    )  # fmt: skip
    service.add_argument(
        "--uninstall-user-service", action="store_true",
        help=_("stop mncd and remove the user unit and the D-Bus activation file, then exit"),
    )  # fmt: skip
    return parser


if __name__ == "__main__":
    sys.exit(main())
