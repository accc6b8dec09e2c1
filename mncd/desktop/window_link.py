"""Notices that lead somewhere: a notice's default action and 「詳細」 open the window
(``mncd-window``, a separate application) at the notice's matter, through D-Bus activation of
the application (``org.freedesktop.Application.ActivateAction``); a notice about renewal links
J-LIS's renewal information page. The daemon stays headless: it only sends D-Bus calls, and
where the window is not installed, 「詳細」 shows the details as a second notice, as before."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbus_next import Variant
from dbus_next.aio import MessageBus

from mncd.api import WINDOW_APP_ID, WINDOW_OBJECT_PATH, WINDOW_RENEWAL_ACTION, WINDOW_SHOW_ACTION
from mncd.dbus.bus import CallError, call

if TYPE_CHECKING:
    from mncd.desktop.notifications import DesktopNotifier

log = logging.getLogger(__name__)

APPLICATION_INTERFACE = "org.freedesktop.Application"
DEFAULT_ACTION = "default"
DETAILS_ACTION = "details"
RENEWAL_ACTION = "renewal-info"
#: Seconds to wait for the window: D-Bus activation starts a Python program.
ACTIVATION_TIMEOUT = 60.0
_DBUS = "org.freedesktop.DBus"


def matter_of(subject: str) -> str:
    """The window's matter for a notice's subject (see :mod:`mncd.desktop.notices`):
    ``CARD:auth:expiry`` → ``auth``, ``CARD:sign:invalidated`` → ``sign``, ``CARD:sign:pin`` →
    ``pin-sign``, a reader or the settings → ``doctor``; ``card`` otherwise."""
    parts = subject.split(":")
    if parts[0] == "reader" or subject == "settings":
        return "doctor"
    if len(parts) == 3 and parts[1] in ("auth", "sign"):
        which, what = parts[1], parts[2]
        if what == "pin":
            return f"pin-{which}"
        if what in ("expiry", "invalidated"):
            return which
    return "card"


class WindowLink:
    """Answers the notices' actions by opening the window."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.notifier: DesktopNotifier | None = None

    async def available(self) -> bool:
        """Whether the window runs or the bus can start it."""
        try:
            running = await self._bus_call("NameHasOwner", "s", [WINDOW_APP_ID])
            if running.body[0]:
                return True
            names = await self._bus_call("ListActivatableNames", "", [])
            return WINDOW_APP_ID in names.body[0]
        except CallError as exc:
            log.debug("cannot tell whether the window is installed: %s", exc)
            return False

    async def on_action(self, subject: str, key: str) -> None:
        """A notice's action: open the window at its matter, or J-LIS's renewal page."""
        if await self.available():
            if key == RENEWAL_ACTION:
                if await self.activate(WINDOW_RENEWAL_ACTION, []):
                    return
            elif await self.activate(WINDOW_SHOW_ACTION, [Variant("s", matter_of(subject))]):
                return
        if key in (DEFAULT_ACTION, DETAILS_ACTION) and self.notifier is not None:
            await self.notifier.show_details(subject)

    async def activate(self, action: str, parameter: list[Variant]) -> bool:
        """``ActivateAction`` on the window (started by the bus if needed); False if it failed."""
        try:
            await call(
                self.bus, WINDOW_APP_ID, WINDOW_OBJECT_PATH, APPLICATION_INTERFACE,
                "ActivateAction", "sava{sv}", [action, parameter, {}], ACTIVATION_TIMEOUT,
            )  # fmt: skip
        except CallError as exc:
            log.warning("cannot open the window (%s)", exc)
            return False
        log.info("opened the window: %s %s", action, [p.value for p in parameter])
        return True

    async def _bus_call(self, member: str, signature: str, body: list) -> object:
        return await call(self.bus, _DBUS, "/org/freedesktop/DBus", _DBUS, member, signature,
                          body, 10.0)  # fmt: skip
