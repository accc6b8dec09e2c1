"""Desktop notifications through ``org.freedesktop.Notifications`` (specification 1.2).

:class:`DesktopNotifier` runs on the daemon's own asyncio bus. It keeps one live notification per
:attr:`Notice.subject` (later notices replace it through ``replaces_id``), honours the server's
capabilities (actions, body markup), and never raises when no server is running: notices wait
as pending and are sent when a server takes the name (``NameOwnerChanged``, no polling). Calls
keep D-Bus auto-start, so an activatable server is started by the first notice.

The ids of live notifications are kept in the state directory (:class:`NotificationIds`), so a
restarted daemon can still replace or withdraw what its predecessor showed, as long as the same
server on the same bus holds them (ids mean nothing to another server).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from dbus_next import Message, MessageType, Variant
from dbus_next.aio import MessageBus

from mncd.core.state import read_state_file, write_state_file
from mncd.dbus.bus import CallError, call

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
INTERFACE = "org.freedesktop.Notifications"
DETAILS_ACTION = "details"
#: The action a server invokes when the notification itself is clicked.
DEFAULT_ACTION = "default"
#: Seconds to wait for a reply; a little over dbus-daemon's activation timeout.
CALL_TIMEOUT = 30.0

_DBUS = "org.freedesktop.DBus"
_NO_SERVER = {_DBUS + ".Error.ServiceUnknown", _DBUS + ".Error.NameHasNoOwner"}
_MATCH_RULES = (
    f"type='signal',sender='{_DBUS}',interface='{_DBUS}',member='NameOwnerChanged',"
    f"arg0='{BUS_NAME}'",
    f"type='signal',interface='{INTERFACE}',path='{OBJECT_PATH}'",
)


class Urgency(IntEnum):
    LOW = 0
    NORMAL = 1
    CRITICAL = 2


@dataclass
class Notice:
    """One thing to tell the user; ``subject`` is the stable key of its live notification."""

    subject: str
    summary: str
    body: str
    urgency: int
    category: str
    details: str = ""
    icon: str = "security-high"
    details_label: str = "Details"
    #: Body with markup (<b>, <i>, <a href>), used instead of ``body`` if the server has it.
    markup: str = ""
    #: More actions, (key, label) each, after 「詳細」 (e.g. J-LIS's renewal page).
    links: tuple[tuple[str, str], ...] = ()


#: ``on_action(subject, action_key)``; may return an awaitable, which is run as a task.
ActionCallback = Callable[[str, str], Any]

#: Most live notification ids kept on disk (one per subject; a few dozen at most in practice).
MAX_KEPT_IDS = 256


class NotificationIds:
    """The ids of live notifications by subject, on disk (0600), with the server that gave them:
    the bus's id (a new session bus reuses unique names) and the server's unique name."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, bus_id: str, server: str) -> dict[str, int]:
        """The ids ``server`` on the bus ``bus_id`` gave, or nothing when they came from another
        server (or the file is unreadable)."""
        raw = read_state_file(self.path, "notification ids")
        if not isinstance(raw, dict) or raw.get("bus") != bus_id or raw.get("server") != server:
            return {}
        ids = raw.get("ids")
        if not isinstance(ids, dict):
            return {}
        return {
            subject: value
            for subject, value in list(ids.items())[:MAX_KEPT_IDS]
            if isinstance(subject, str) and isinstance(value, int) and 0 < value < 2**32
        }

    def save(self, bus_id: str, server: str | None, ids: dict[str, int]) -> None:
        kept = dict(list(ids.items())[:MAX_KEPT_IDS])
        data = {"bus": bus_id, "server": server or "", "ids": kept}
        try:
            write_state_file(self.path, data)
        except OSError as exc:
            log.warning("cannot keep the notification ids (%s)", exc)


class DesktopNotifier:
    """Shows :class:`Notice` s on the bus's notification server."""

    def __init__(
        self,
        bus: MessageBus,
        app_name: str = "mncd",
        desktop_entry: str = "io.github.mncd",
        on_action: ActionCallback | None = None,
        ids_path: Path | None = None,
        default_action: bool = False,
    ) -> None:
        """``default_action``: clicking a notification (the server's "default" action) calls
        ``on_action`` as 「詳細」 does."""
        self._bus = bus
        self.app_name = app_name
        self.desktop_entry = desktop_entry
        self._on_action = on_action
        self._default_action = default_action and on_action is not None
        #: Called with a notice's subject as soon as the server has accepted it (also for a
        #: notice that waited for a server).
        self.on_shown: Callable[[str], None] | None = None
        self._ids: dict[str, int] = {}
        self._live: dict[int, Notice] = {}
        self._pending: dict[str, Notice] = {}
        self._caps: frozenset[str] | None = None
        self._owner: str | None = None
        self._lock = asyncio.Lock()
        self._started = False
        self._warned = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kept = NotificationIds(ids_path) if ids_path is not None else None
        self._bus_id = ""

    @property
    def pending(self) -> list[Notice]:
        """Notices waiting for a notification server, oldest first."""
        return list(self._pending.values())

    def notification_id(self, subject: str) -> int | None:
        """The server's id of the live notification for ``subject``, if any."""
        return self._ids.get(subject)

    async def start(self) -> None:
        """Watch the server's name and signals; :meth:`show` calls this by itself."""
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._bus.add_message_handler(self._on_message)
        for rule in _MATCH_RULES:
            try:
                await self._call(_DBUS, "/org/freedesktop/DBus", _DBUS, "AddMatch", "s", [rule])
            except CallError as exc:
                log.warning("cannot watch the notification server: %s", exc)
        try:
            reply = await self._call(
                _DBUS, "/org/freedesktop/DBus", _DBUS, "GetNameOwner", "s", [BUS_NAME]
            )
            self._owner = reply.body[0]
        except CallError:
            self._owner = None
        if self._kept is not None:
            try:
                self._bus_id = (await self._call(_DBUS, "/org/freedesktop/DBus", _DBUS, "GetId",
                                                 "", [])).body[0]  # fmt: skip
            except CallError as exc:
                log.warning("cannot tell this bus from another (%s)", exc)
            if self._bus_id and self._owner:
                # What a predecessor showed on this server can still be replaced or withdrawn.
                self._ids.update(self._kept.load(self._bus_id, self._owner))

    async def stop(self) -> None:
        """Stop watching and drop pending notices; live notifications stay on screen."""
        if not self._started:
            return
        self._started = False
        self._bus.remove_message_handler(self._on_message)
        for task in list(self._tasks):
            task.cancel()
        self._pending.clear()
        for rule in _MATCH_RULES:
            with contextlib.suppress(CallError):
                await self._call(_DBUS, "/org/freedesktop/DBus", _DBUS, "RemoveMatch", "s", [rule])

    async def show(self, notice: Notice) -> bool:
        """Show or update the notification for ``notice.subject``; False if it is pending."""
        async with self._lock:
            await self._start()
            return await self._show(notice)

    async def withdraw(self, subject: str) -> None:
        """Close the notification for ``subject`` and forget any pending notice for it."""
        async with self._lock:
            await self._start()
            self._pending.pop(subject, None)
            notification_id = self._ids.pop(subject, None)
            if notification_id is None:
                return
            self._live.pop(notification_id, None)
            self._keep_ids()
            try:
                await self._call(
                    BUS_NAME, OBJECT_PATH, INTERFACE, "CloseNotification", "u", [notification_id]
                )
            except CallError as exc:
                log.debug("CloseNotification failed: %s", exc)

    async def _show(self, notice: Notice) -> bool:
        try:
            notification_id = await self._notify(notice)
        except CallError as exc:
            self._pending[notice.subject] = notice
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot show desktop notifications (%s); they will be shown when a "
                    "notification server appears",
                    exc,
                )
            return False
        self._warned = False
        self._pending.pop(notice.subject, None)
        previous = self._ids.get(notice.subject)
        if previous is not None and previous != notification_id:
            self._live.pop(previous, None)
        self._ids[notice.subject] = notification_id
        self._live[notification_id] = notice
        self._keep_ids()
        if self.on_shown is not None:
            try:
                self.on_shown(notice.subject)
            except Exception:
                log.exception("notification callback failed")
        return True

    async def _notify(self, notice: Notice) -> int:
        caps = await self._capabilities()
        replaces_id = self._ids.get(notice.subject, 0)
        try:
            return await self._send_notify(notice, caps, replaces_id)
        except CallError as exc:
            if not replaces_id or exc.name in _NO_SERVER:
                raise
            # The id may be stale (the server restarted): retry once as a new notification.
            log.debug("Notify replacing %d failed (%s); sending a new one", replaces_id, exc)
            self._forget(replaces_id)
            return await self._send_notify(notice, caps, 0)

    async def _send_notify(self, notice: Notice, caps: frozenset[str], replaces_id: int) -> int:
        actions: list[str] = []
        if "actions" in caps and (notice.details or self._on_action is not None):
            if self._default_action:
                actions = [DEFAULT_ACTION, notice.details_label]
            actions += [DETAILS_ACTION, notice.details_label]
            if self._on_action is not None:
                for key, label in notice.links:
                    actions += [key, label]
        if "body-markup" in caps:
            body = notice.markup or html.escape(notice.body, quote=False)
        else:
            body = notice.body
        hints = {"urgency": Variant("y", int(notice.urgency))}
        if notice.category:
            hints["category"] = Variant("s", notice.category)
        if self.desktop_entry:
            hints["desktop-entry"] = Variant("s", self.desktop_entry)
        timeout = 0 if notice.urgency >= Urgency.CRITICAL else -1
        args = [self.app_name, replaces_id, notice.icon, notice.summary, body, actions, hints]
        reply = await self._call(
            BUS_NAME, OBJECT_PATH, INTERFACE, "Notify", "susssasa{sv}i", [*args, timeout]
        )
        self._owner = reply.sender or self._owner
        return int(reply.body[0])

    async def _capabilities(self) -> frozenset[str]:
        if self._caps is None:
            reply = await self._call(BUS_NAME, OBJECT_PATH, INTERFACE, "GetCapabilities", "", [])
            self._caps = frozenset(reply.body[0])
            self._owner = reply.sender or self._owner
        return self._caps

    async def _call(
        self, destination: str, path: str, interface: str, member: str, signature: str, body: list
    ) -> Message:
        return await call(
            self._bus, destination, path, interface, member, signature, body, CALL_TIMEOUT
        )

    def _forget(self, notification_id: int) -> None:
        self._live.pop(notification_id, None)
        subjects = [subject for subject, known in self._ids.items() if known == notification_id]
        for subject in subjects:  # also ids a predecessor showed (no notice in memory)
            del self._ids[subject]
        if subjects:
            self._keep_ids()

    def _keep_ids(self) -> None:
        if self._kept is not None and self._bus_id:
            self._kept.save(self._bus_id, self._owner, self._ids)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.interface == _DBUS and msg.member == "NameOwnerChanged" and msg.sender == _DBUS:
            if msg.signature == "sss" and msg.body[0] == BUS_NAME:
                self._owner_changed(msg.body[2] or None)
            return
        if msg.interface != INTERFACE or msg.path != OBJECT_PATH:
            return
        if self._owner is not None and msg.sender != self._owner:
            return
        if msg.member == "NotificationClosed" and msg.signature == "uu":
            self._forget(msg.body[0])
        elif msg.member == "ActionInvoked" and msg.signature == "us":
            self._action_invoked(msg.body[0], msg.body[1])

    def _owner_changed(self, owner: str | None) -> None:
        # A new (or no) server: capabilities and ids of the old one mean nothing any more.
        self._owner = owner
        self._caps = None
        self._ids.clear()
        self._live.clear()
        self._keep_ids()
        if owner is not None and self._pending:
            log.info("notification server appeared; showing %d notice(s)", len(self._pending))
            self._spawn(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            for notice in list(self._pending.values()):
                if notice.subject in self._pending:
                    await self._show(notice)

    def _action_invoked(self, notification_id: int, key: str) -> None:
        notice = self._live.get(notification_id)
        if notice is None:
            return
        if self._on_action is not None:
            try:
                result = self._on_action(notice.subject, key)
            except Exception:
                log.exception("notification action callback failed")
                return
            if inspect.isawaitable(result):
                self._spawn(result)
        elif key == DETAILS_ACTION:
            self._spawn(self.show_details(notice.subject))

    async def show_details(self, subject: str) -> None:
        """The details of the live notice for ``subject`` as a notice of their own."""
        notice = next((n for n in self._live.values() if n.subject == subject), None)
        if notice is None or not notice.details:
            return
        details = replace(
            notice,
            subject=notice.subject + ":details",
            body=notice.details,
            markup="",
            details="",
            links=(),
            urgency=min(int(notice.urgency), Urgency.NORMAL),
        )
        await self.show(details)

    def _spawn(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notification task failed", exc_info=task.exception())
