"""DesktopNotifier against a real notification server (dunst on Xvfb) and a scripted fake one."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from dbus_next import DBusError
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method, signal
from notifyserver import NotifyServer

from mncd.desktop.notifications import DesktopNotifier, Notice
from mncd.vcard.sessionbus import PrivateSessionBus

SUBJECT = "0123abcd:sign:expiry"
SUMMARY = "署名用電子証明書の有効期限まであと30日です"
BODY = "有効期限は2026年12月25日です。期限の3か月前から市区町村の窓口で更新できます。"

Scenario = Callable[[DesktopNotifier], Awaitable[Any]]


def notice(subject: str = SUBJECT, summary: str = SUMMARY, **fields: Any) -> Notice:
    values: dict[str, Any] = {"body": BODY, "urgency": 1, "category": "x-mncd.expiry"}
    return Notice(subject=subject, summary=summary, **{**values, **fields})


def run(address: str, scenario: Scenario, **kwargs: Any) -> Any:
    """Run ``scenario(notifier)`` with a DesktopNotifier on its own connection to ``address``."""

    async def main() -> Any:
        bus = await MessageBus(bus_address=address).connect()
        notifier = DesktopNotifier(bus, **kwargs)
        try:
            return await scenario(notifier)
        finally:
            await notifier.stop()
            bus.disconnect()
            await bus.wait_for_disconnect()

    return asyncio.run(main())


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``predicate`` while letting the event loop run."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def bus(tmp_path) -> Iterator[PrivateSessionBus]:
    private = PrivateSessionBus(tmp_path)
    yield private
    private.stop()


@pytest.fixture
def dunst(tmp_path, bus) -> Iterator[NotifyServer]:
    server = NotifyServer(tmp_path, bus.address).start()
    yield server
    server.stop()


# --- through dunst ---------------------------------------------------------------------------


@pytest.mark.parametrize(("urgency", "name"), [(0, "LOW"), (1, "NORMAL"), (2, "CRITICAL")])
def test_notice_is_shown_with_its_fields(bus, dunst, urgency, name) -> None:
    n = notice(urgency=urgency, details="詳しい説明", details_label="詳細")

    async def scenario(notifier: DesktopNotifier) -> int | None:
        assert await notifier.show(n) is True
        return notifier.notification_id(SUBJECT)

    notification_id = run(bus.address, scenario)
    assert dunst.live_count() == 1
    [got] = dunst.received()
    assert got["appname"] == "mncd"
    assert got["summary"] == SUMMARY
    assert got["body"] == BODY
    assert got["urgency"] == name
    assert got["category"] == "x-mncd.expiry"
    assert got["desktop_entry"] == "io.github.mncd"
    assert got["icon"] == "security-high"
    assert '"details": "詳細"' in got["actions"]
    [shown] = dunst.shown()
    assert (shown["id"], shown["appname"], shown["summary"], shown["body"]) == (
        notification_id,
        "mncd",
        SUMMARY,
        BODY,
    )
    assert shown["category"] == "x-mncd.expiry"
    assert shown["icon_path"].endswith("/security-high.png")  # dunst found and drew the icon


def test_plain_body_is_escaped_for_a_markup_server(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice(body="PIN <4桁> & 署名用"))

    run(bus.address, scenario)
    [got] = dunst.received()
    assert got["body"] == "PIN &lt;4桁&gt; &amp; 署名用"


def test_same_subject_replaces_the_live_notification(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> tuple[int | None, int | None, int]:
        assert await notifier.show(notice(summary="あと30日"))
        first = notifier.notification_id(SUBJECT)
        assert await notifier.show(notice(summary="あと29日"))
        return first, notifier.notification_id(SUBJECT), dunst.live_count()

    first, second, live = run(bus.address, scenario)
    assert first == second
    assert live == 1
    assert [n["summary"] for n in dunst.received()] == ["あと30日", "あと29日"]
    [shown] = dunst.shown()
    assert (shown["id"], shown["summary"]) == (first, "あと29日")


def test_different_subjects_stack(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice("card:sign:expiry", "署名用"))
        assert await notifier.show(notice("card:auth:expiry", "利用者証明用"))

    run(bus.address, scenario)
    assert dunst.live_count() == 2
    shown = dunst.shown()
    assert sorted(n["summary"] for n in shown) == ["利用者証明用", "署名用"]
    assert len({n["id"] for n in shown}) == 2


def test_closed_notification_is_not_replaced_but_created_again(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> tuple[int | None, int | None]:
        assert await notifier.show(notice(summary="一回目"))
        first = notifier.notification_id(SUBJECT)
        dunst.close_all()  # the user dismisses it: NotificationClosed(id, 2)
        await eventually(lambda: notifier.notification_id(SUBJECT) is None, "the id forgotten")
        assert await notifier.show(notice(summary="二回目"))
        return first, notifier.notification_id(SUBJECT)

    first, second = run(bus.address, scenario)
    assert second is not None and second != first
    assert [n["summary"] for n in dunst.shown()] == ["二回目", "一回目"]


def test_details_action_shows_the_details(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice(details="更新には署名用パスワードが必要です。"))
        dunst.action(0)  # the only action of the notification on top
        await eventually(lambda: notifier.notification_id(SUBJECT + ":details"), "details")

    run(bus.address, scenario)
    assert dunst.live_count() == 2
    by_body = {n["body"]: n for n in dunst.shown()}
    assert by_body["更新には署名用パスワードが必要です。"]["summary"] == SUMMARY
    assert BODY in by_body


def test_action_goes_to_the_callback(bus, dunst) -> None:
    calls: list[tuple[str, str]] = []

    async def on_action(subject: str, key: str) -> None:
        calls.append((subject, key))

    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice())
        dunst.action(0)
        await eventually(lambda: calls, "the callback")

    run(bus.address, scenario, on_action=on_action)
    assert calls == [(SUBJECT, "details")]
    assert dunst.live_count() == 1  # no details notification when a callback handles it


def test_withdraw_closes_the_notification(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice())
        assert dunst.live_count() == 1
        await notifier.withdraw(SUBJECT)
        assert notifier.notification_id(SUBJECT) is None

    run(bus.address, scenario)
    assert dunst.live_count() == 0
    assert [n["summary"] for n in dunst.history()] == [SUMMARY]


def test_no_server_then_pending_notices_appear_by_themselves(bus, tmp_path, caplog) -> None:
    server = NotifyServer(tmp_path, bus.address)

    async def scenario(notifier: DesktopNotifier) -> None:
        with caplog.at_level(logging.WARNING, logger="mncd.desktop.notifications"):
            assert await notifier.show(notice("a:sign:expiry", "古い")) is False
            assert await notifier.show(notice("a:sign:expiry", "新しい")) is False
            assert await notifier.show(notice("a:auth:expiry", "利用者証明用")) is False
        assert len(caplog.records) == 1
        assert [n.summary for n in notifier.pending] == ["新しい", "利用者証明用"]
        await asyncio.to_thread(server.start)
        # No further show(): the notifier sees NameOwnerChanged and sends what is pending.
        await eventually(lambda: not notifier.pending, "pending notices sent")
        await eventually(lambda: server.live_count() == 2, "two notifications on screen")

    try:
        run(bus.address, scenario)
        assert sorted(n["summary"] for n in server.shown()) == ["利用者証明用", "新しい"]
    finally:
        server.stop()


def test_restarted_server_gets_a_new_notification(bus, dunst) -> None:
    async def scenario(notifier: DesktopNotifier) -> None:
        assert await notifier.show(notice(summary="前"))
        await asyncio.to_thread(dunst.stop_dunst)
        await asyncio.to_thread(dunst.start)
        await eventually(lambda: notifier.notification_id(SUBJECT) is None, "ids forgotten")
        assert await notifier.show(notice(summary="後"))

    run(bus.address, scenario)
    assert dunst.live_count() == 1
    assert [n["summary"] for n in dunst.shown()] == ["後"]


# --- against a scripted fake server -----------------------------------------------------------

# dbus-next reads signatures from annotations; named constants keep them valid Python.
S, U, INT, AS, ASV, SSSS, UU, US = "s", "u", "i", "as", "a{sv}", "ssss", "uu", "us"


class FakeServer(ServiceInterface):
    """Records Notify calls; rejects unknown ``replaces_id`` like a server that restarted."""

    def __init__(self, capabilities: list[str]) -> None:
        super().__init__("org.freedesktop.Notifications")
        self.capabilities = capabilities
        self.calls: list[dict[str, Any]] = []
        self.known: set[int] = set()
        self.next_id = 100

    @method()
    def GetCapabilities(self) -> AS:
        return self.capabilities

    @method()
    def GetServerInformation(self) -> SSSS:
        return ["fake", "mncd", "1", "1.2"]

    @method()
    def Notify(
        self,
        app: S,
        replaces: U,
        icon: S,
        summary: S,
        body: S,
        actions: AS,
        hints: ASV,
        timeout: INT,
    ) -> U:
        self.calls.append(
            {"replaces": replaces, "summary": summary, "body": body, "actions": actions,
             "hints": {k: v.value for k, v in hints.items()}, "timeout": timeout, "app": app}
        )  # fmt: skip
        if replaces and replaces not in self.known:
            raise DBusError("org.example.Error.UnknownId", "no such notification")
        if not replaces:
            self.next_id += 1
            replaces = self.next_id
        self.known.add(replaces)
        return replaces

    @method()
    def CloseNotification(self, notification_id: U) -> None:
        self.known.discard(notification_id)

    @signal()
    def NotificationClosed(self, notification_id: int, reason: int) -> UU:
        return [notification_id, reason]

    @signal()
    def ActionInvoked(self, notification_id: int, key: str) -> US:
        return [notification_id, key]


def run_with_fake(address: str, capabilities: list[str], scenario: Callable, **kwargs) -> Any:
    async def with_fake(notifier: DesktopNotifier) -> Any:
        server_bus = await MessageBus(bus_address=address).connect()
        fake = FakeServer(capabilities)
        server_bus.export("/org/freedesktop/Notifications", fake)
        await server_bus.request_name("org.freedesktop.Notifications")
        try:
            return await scenario(notifier, fake)
        finally:
            server_bus.disconnect()

    return run(address, with_fake, **kwargs)


def test_without_actions_or_markup_capabilities(bus) -> None:
    async def scenario(notifier: DesktopNotifier, fake: FakeServer) -> list[dict[str, Any]]:
        assert await notifier.show(notice(body="A & <B>", details="詳細", markup="<b>A</b>"))
        assert await notifier.show(notice("x:critical", urgency=2, category="device"))
        return fake.calls

    first, second = run_with_fake(bus.address, ["body"], scenario)
    assert first["actions"] == []
    assert first["body"] == "A & <B>"  # plain text, not escaped, markup not used
    assert first["hints"] == {
        "urgency": 1,
        "category": "x-mncd.expiry",
        "desktop-entry": "io.github.mncd",
    }
    assert (first["timeout"], first["app"], first["replaces"]) == (-1, "mncd", 0)
    assert second["hints"]["urgency"] == 2 and second["hints"]["category"] == "device"
    assert second["timeout"] == 0  # critical: never expires


def test_actions_and_markup_capabilities(bus) -> None:
    async def scenario(notifier: DesktopNotifier, fake: FakeServer) -> list[dict[str, Any]]:
        await notifier.show(notice(body="A & <B>", details="詳細", details_label="詳細を表示"))
        await notifier.show(notice("y", body="plain", markup="<b>bold</b>"))
        return fake.calls

    first, second = run_with_fake(bus.address, ["actions", "body", "body-markup"], scenario)
    assert first["actions"] == ["details", "詳細を表示"]
    assert first["body"] == "A &amp; &lt;B&gt;"
    assert second["actions"] == []  # nothing to show for "details"
    assert second["body"] == "<b>bold</b>"


def test_stale_replaces_id_is_retried_as_a_new_notification(bus) -> None:
    async def scenario(notifier: DesktopNotifier, fake: FakeServer) -> Any:
        assert await notifier.show(notice(summary="1"))
        fake.known.clear()  # as if the server had forgotten its notifications
        assert await notifier.show(notice(summary="2"))
        return fake.calls, notifier.notification_id(SUBJECT)

    calls, notification_id = run_with_fake(bus.address, ["body"], scenario)
    assert [(c["summary"], c["replaces"]) for c in calls] == [("1", 0), ("2", 101), ("2", 0)]
    assert notification_id == 102


def test_closed_and_action_signals_from_the_server(bus) -> None:
    actions: list[tuple[str, str]] = []

    async def scenario(notifier: DesktopNotifier, fake: FakeServer) -> list[dict[str, Any]]:
        assert await notifier.show(notice(summary="1"))
        fake.ActionInvoked(101, "details")
        await eventually(lambda: actions, "the action callback")
        fake.NotificationClosed(101, 2)
        await eventually(lambda: notifier.notification_id(SUBJECT) is None, "the id forgotten")
        assert await notifier.show(notice(summary="2"))
        return fake.calls

    calls = run_with_fake(
        bus.address, ["actions"], scenario, on_action=lambda *a: actions.append(a)
    )
    assert actions == [(SUBJECT, "details")]
    assert [c["replaces"] for c in calls] == [0, 0]


def test_show_never_raises_on_a_closed_connection(bus) -> None:
    async def main() -> bool:
        connection = await MessageBus(bus_address=bus.address).connect()
        notifier = DesktopNotifier(connection)
        await notifier.start()
        connection.disconnect()
        return await notifier.show(notice())

    assert asyncio.run(main()) is False


def test_kept_ids_belong_to_one_server_on_one_bus(tmp_path):
    """A restarted daemon adopts the ids only from the same server on the same bus: another
    server (or a new session reusing unique names) may have given the same numbers to others."""
    from mncd.desktop.notifications import NotificationIds

    kept = NotificationIds(tmp_path / "mncd" / "notifications.json")
    assert kept.load("bus-a", ":1.7") == {}
    kept.save("bus-a", ":1.7", {"card:auth:expiry": 4, "card:sign:expiry": 5})
    assert (tmp_path / "mncd" / "notifications.json").stat().st_mode & 0o777 == 0o600
    assert kept.load("bus-a", ":1.7") == {"card:auth:expiry": 4, "card:sign:expiry": 5}
    assert kept.load("bus-a", ":1.9") == {}  # the server restarted
    assert kept.load("bus-b", ":1.7") == {}  # another session bus
    for garbage in ("[]", '{"bus": "bus-a", "server": ":1.7", "ids": {"x": -1, "y": "3"}}', "{"):
        (tmp_path / "mncd" / "notifications.json").write_text(garbage)
        assert kept.load("bus-a", ":1.7") == {}
