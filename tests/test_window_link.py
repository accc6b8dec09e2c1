"""Which matter of the window a notice opens (mncd.desktop.window_link), for every kind of
notice mncd gives; and the calls the daemon sends on a real bus to an application owning the
window's name (no ``from __future__ import annotations``: dbus-next reads the signatures)."""

import pytest

from mncd.desktop import notices
from mncd.desktop.window_link import matter_of

CARD = "0123456789abcdef0123456789abcdef"
#: D-Bus signatures, as dbus-next reads them from annotations.
S, AV, ASV = "s", "av", "a{sv}"


@pytest.mark.parametrize(
    ("subject", "matter"),
    [
        (notices.pin_blocked_message(CARD, "auth").subject, "pin-auth"),
        (notices.pin_blocked_message(CARD, "sign").subject, "pin-sign"),
        (notices.invalidated_message(CARD, "personal-data", ["address"]).subject, "sign"),
        (notices.renewed_message(CARD).subject, "card"),
        (notices.unsupported_reader_message("Sony RC-S380").subject, "doctor"),
        (notices.settings_message(None, ["x"]).subject, "doctor"),
        (f"{CARD}:auth:expiry", "auth"),
        (f"{CARD}:sign:expiry", "sign"),
        ("anything else", "card"),
    ],
)
def test_each_notice_opens_its_matter(subject, matter):
    assert matter_of(subject) == matter


class FakeApplication:
    """An application owning the window's name on a private bus, recording what it is asked
    (org.freedesktop.Application, as GApplication exports it)."""

    def __init__(self) -> None:
        from dbus_next.service import ServiceInterface, method

        calls = self.calls = []

        class Application(ServiceInterface):
            def __init__(self) -> None:
                super().__init__("org.freedesktop.Application")

            @method()
            def ActivateAction(self, name: S, parameter: AV, platform: ASV):
                calls.append((name, [p.value for p in parameter]))

        self.interface = Application()


def run_on_bus(tmp_path, scenario, *, with_window: bool):
    import asyncio

    from dbus_next.aio import MessageBus

    from mncd.api import WINDOW_APP_ID, WINDOW_OBJECT_PATH
    from mncd.desktop.window_link import WindowLink
    from mncd.vcard.sessionbus import PrivateSessionBus

    fake = FakeApplication()
    bus = PrivateSessionBus(tmp_path)

    async def main():
        daemon_side = await MessageBus(bus_address=bus.address).connect()
        if with_window:
            window_side = await MessageBus(bus_address=bus.address).connect()
            window_side.export(WINDOW_OBJECT_PATH, fake.interface)
            await window_side.request_name(WINDOW_APP_ID)
        link = WindowLink(daemon_side)
        details: list[str] = []

        class Notifier:
            async def show_details(self, subject: str) -> None:
                details.append(subject)

        link.notifier = Notifier()
        await scenario(link)
        return details

    try:
        return fake.calls, asyncio.run(main())
    finally:
        bus.stop()


def test_actions_open_the_window_at_the_matter_or_the_renewal_page(tmp_path):
    async def scenario(link):
        assert await link.available()
        await link.on_action(f"{CARD}:sign:pin", "default")
        await link.on_action(f"{CARD}:auth:expiry", "details")
        await link.on_action(f"{CARD}:auth:expiry", "renewal-info")

    calls, details = run_on_bus(tmp_path, scenario, with_window=True)
    assert calls == [("show", ["pin-sign"]), ("show", ["auth"]), ("renewal-info", [])]
    assert details == []


def test_without_the_window_details_come_as_a_notice(tmp_path):
    async def scenario(link):
        assert not await link.available()
        await link.on_action(f"{CARD}:sign:pin", "details")
        await link.on_action(f"{CARD}:sign:pin", "renewal-info")

    calls, details = run_on_bus(tmp_path, scenario, with_window=False)
    assert calls == []
    assert details == [f"{CARD}:sign:pin"]
