"""The connection to mncd: :class:`MyNumberCard`, one typed method per call of the API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.errors import AuthError, InvalidAddressError

from mncd import errors
from mncd.api import BUS_NAME, INTERFACE, OBJECT_PATH
from mncd.client.digest import DigestSource
from mncd.client.errors import BusUnavailable, CallTimeout, error_for_reply
from mncd.client.results import (
    CardInfo,
    Event,
    PersonalDataCheck,
    PinStatus,
    ServiceSignatures,
    SignedData,
    Status,
    _str,
    _strings,
    plain,
)

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

#: Calls answered from the daemon's memory (GetStatus, GetCertificate, properties).
QUICK_TIMEOUT = 25.0
#: Calls that may show a PIN dialog: a person may take minutes to find the card and type.
DIALOG_TIMEOUT = 600.0


def event_from_signal(interface: str, path: str, member: str, body: Sequence[Any]) -> Event | None:
    """The event for a signal, or None when it is not about mncd."""
    if interface == INTERFACE and path == OBJECT_PATH:
        return Event(member, plain(list(body)))
    if (
        interface == PROPERTIES_INTERFACE
        and path == OBJECT_PATH
        and member == "PropertiesChanged"
        and len(body) >= 2
        and body[0] == INTERFACE
    ):
        changed: dict[str, Any] = plain(dict(body[1]))
        for name in body[2] if len(body) > 2 else ():
            changed.setdefault(str(name), "(invalidated)")
        return Event("PropertiesChanged", changed)
    if interface == DBUS_NAME and member == "NameOwnerChanged" and list(body[:1]) == [BUS_NAME]:
        return Event("DaemonStopped" if not body[-1] else "DaemonStarted", [])
    return None


def _options(**values: Any) -> dict[str, Variant]:
    """a{sv} options from keyword values (None left out)."""
    types = {str: "s", bool: "b"}
    return {
        name.replace("_", "-"): Variant(types[type(value)], value)
        for name, value in values.items()
        if value is not None
    }


class MyNumberCard:
    """A connection to mncd. Create it with :meth:`connect`; close it with :meth:`close` (or
    ``async with``)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> MyNumberCard:
        """Connect to the session bus, or to the bus at ``address``; raises
        :class:`BusUnavailable`. The daemon itself is started by the first call if needed."""
        try:
            if address is None:
                bus = await MessageBus(bus_type=BusType.SESSION).connect()
            else:
                bus = await MessageBus(bus_address=address).connect()
        except (InvalidAddressError, AuthError, OSError, KeyError, EOFError) as exc:
            detail = str(exc) or type(exc).__name__
            raise BusUnavailable(f"cannot connect to the session bus: {detail}") from exc
        return cls(bus)

    async def close(self) -> None:
        """Leave the bus."""
        self.bus.disconnect()
        # After Ctrl-C the disconnect future may already be cancelled: nothing left to wait for.
        with suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.bus.wait_for_disconnect(), 2)

    async def __aenter__(self) -> MyNumberCard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the API -------------------------------------------------------------------------------

    async def get_status(self) -> Status:
        """GetStatus: answered from the daemon's memory, never waiting for the card."""
        (body,) = await self.call("GetStatus")
        return Status.from_dbus(body)

    async def get_certificate(self, which: str) -> bytes:
        """GetCertificate: ``auth``, ``auth-ca`` or ``sign-ca``, DER."""
        (der,) = await self.call("GetCertificate", "s", [which])
        return bytes(der)

    async def sign(
        self,
        data: bytes,
        hash: str = "sha256",
        *,
        pin: str | None = None,
        digest: bool = False,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> SignedData:
        """Sign with the signing key (署名用). Without ``pin`` the daemon asks the user;
        ``digest=True``: ``data`` is already the ``hash`` digest."""
        options = _options(
            pin=pin,
            digest=digest or None,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
        )
        signature, certificate = await self.call(
            "Sign", "aysa{sv}", [bytes(data), hash, options], timeout=DIALOG_TIMEOUT
        )
        return SignedData(bytes(signature), bytes(certificate))

    async def sign_document(
        self,
        digest_for: Callable[[bytes], Awaitable[bytes]],
        hash: str = "sha256",
        *,
        pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> SignedData:
        """Sign with the signing key a digest that depends on the signing certificate (a PDF
        whose /Name is the holder's, a CAdES signature naming its certificate): once the PIN is
        verified, the daemon calls ``digest_for(certificate)`` and signs the digest it returns,
        in the same card transaction, so a document costs one VERIFY and one signature.

        An exception from ``digest_for`` is raised here (the daemon signs nothing)."""
        options = _options(pin=pin, interactive=interactive, allow_last_try=allow_last_try or None)
        source = DigestSource(
            self.bus, lambda: self.call_bus("GetNameOwner", "s", [BUS_NAME]), digest_for, hash
        )
        options["digest-from"] = Variant("o", source.path)
        with source:
            try:
                signature, certificate = await self.call(
                    "Sign", "aysa{sv}", [b"", hash, options], timeout=DIALOG_TIMEOUT
                )
            except errors.Cancelled as exc:
                if source.failure:  # the daemon cancelled because digest_for failed: the reason
                    raise source.failure[0] from exc
                raise
        return SignedData(bytes(signature), bytes(certificate))

    async def authenticate(
        self,
        challenge: bytes,
        hash: str = "sha256",
        *,
        pin: str | None = None,
        digest: bool = False,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> SignedData:
        """Sign a challenge with the user-authentication key (利用者証明用)."""
        options = _options(
            pin=pin,
            hash=hash,
            digest=digest or None,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
        )
        signature, certificate = await self.call(
            "Authenticate", "aya{sv}", [bytes(challenge), options], timeout=DIALOG_TIMEOUT
        )
        return SignedData(bytes(signature), bytes(certificate))

    async def sign_digest_infos(
        self,
        which: str,
        digest_infos: Sequence[bytes],
        *,
        site: str | None = None,
        combination_code: bool = False,
        pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> ServiceSignatures:
        """SignDigestInfo: each DER DigestInfo signed as it is with the ``auth`` or ``sign``
        key, under one PIN; ``site``: the origin the daemon's dialog names."""
        options = _options(
            pin=pin,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
            site=site,
            combination_code=combination_code or None,
        )
        (body,) = await self.call(
            "SignDigestInfo",
            "saaya{sv}",
            [which, [bytes(item) for item in digest_infos], options],
            timeout=DIALOG_TIMEOUT,
        )
        return ServiceSignatures.from_dbus(body)

    async def read_card_info(
        self,
        *,
        site: str | None = None,
        combination_code: bool = False,
        pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> CardInfo:
        """ReadCardInfo: name, address, birth date and sex after the card-info PIN."""
        options = _options(
            pin=pin,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
            site=site,
            combination_code=combination_code or None,
        )
        (body,) = await self.call("ReadCardInfo", "a{sv}", [options], timeout=DIALOG_TIMEOUT)
        return CardInfo.from_dbus(body)

    async def check_personal_data(
        self,
        *,
        pin: str | None = None,
        sign_pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> PersonalDataCheck:
        """Compare the card's name, address, birth date and sex with the signing certificate
        (``pin``: the card-info PIN; ``sign_pin``: the signing password)."""
        options = _options(
            pin=pin,
            sign_pin=sign_pin,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
        )
        (result,) = await self.call("CheckPersonalData", "a{sv}", [options], timeout=DIALOG_TIMEOUT)
        result = plain(result)
        return PersonalDataCheck(
            matches=result.get("matches") is True,
            changed=_strings(result.get("changed")),
            state=_str(result.get("state")),
        )

    async def forget_card(self, card_id: str) -> str:
        """ForgetCard: remove a card the user no longer has (its cache record and reminders);
        ``card_id`` as in :attr:`Status.card_id`, or 8+ of its first digits. Returns the full
        card id."""
        (result,) = await self.call("ForgetCard", "sa{sv}", [card_id, {}])
        return _str(plain(result).get("card_id"))

    async def change_pin(
        self,
        which: str,
        *,
        pin: str | None = None,
        new_pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> None:
        """Change the ``auth``, ``sign`` or ``card-info`` PIN. Without ``pin`` and ``new_pin``
        the daemon asks the user (current PIN, new PIN twice); with them, give both."""
        options = _options(
            pin=pin,
            new_pin=new_pin,
            interactive=interactive,
            allow_last_try=allow_last_try or None,
        )
        await self.call("ChangePin", "sa{sv}", [which, options], timeout=DIALOG_TIMEOUT)

    async def get_pin_status(self) -> PinStatus:
        """GetPinStatus: the tries left on every PIN, read from the card without spending one."""
        (body,) = await self.call("GetPinStatus", "a{sv}", [{}], timeout=DIALOG_TIMEOUT)
        return PinStatus.from_dbus(body)

    async def get_signing_certificate(
        self,
        *,
        pin: str | None = None,
        interactive: bool | None = None,
        allow_last_try: bool = False,
    ) -> bytes:
        """The signing certificate (DER; it holds personal data), read after the signing
        password (``pin``, or the daemon asks the user)."""
        options = _options(pin=pin, interactive=interactive, allow_last_try=allow_last_try or None)
        (der,) = await self.call(
            "GetSigningCertificate", "a{sv}", [options], timeout=DIALOG_TIMEOUT
        )
        return bytes(der)

    async def name_has_owner(self, name: str = BUS_NAME) -> bool:
        """Whether ``name`` (mncd by default) is owned on the bus now; starts nothing."""
        return bool(await self.call_bus("NameHasOwner", "s", [name]))

    async def activatable_names(self) -> tuple[str, ...]:
        """The names the bus can start on demand (D-Bus activation)."""
        return _strings(await self.call_bus("ListActivatableNames"))

    async def get_properties(self) -> dict[str, Any]:
        """The properties (``State``, ``CardPresent``, ``Readers``, ``CertificateStates``) as
        plain values."""
        (values,) = await self.call("GetAll", "s", [INTERFACE], interface=PROPERTIES_INTERFACE)
        return plain(values)

    async def subscribe(self, handler: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``handler`` for every event of the daemon from now on; returns a function that
        stops it."""
        rules = [
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',interface='{INTERFACE}'",
            f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
            f"interface='{PROPERTIES_INTERFACE}',member='PropertiesChanged',arg0='{INTERFACE}'",
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
        ]

        def on_message(message: Message) -> None:
            if message.message_type == MessageType.SIGNAL:
                event = event_from_signal(
                    message.interface or "", message.path or "", message.member or "", message.body
                )
                if event is not None:
                    handler(event)

        self.bus.add_message_handler(on_message)
        for rule in rules:
            await self.call_bus("AddMatch", "s", [rule])

        def stop() -> None:
            self.bus.remove_message_handler(on_message)
            for rule in rules:
                self.bus.send(_call_message(DBUS_NAME, DBUS_PATH, DBUS_NAME, "RemoveMatch", "s",
                                            [rule], no_reply=True))  # fmt: skip

        return stop

    async def wait_closed(self) -> None:
        """Return when the connection to the bus has ended."""
        with suppress(Exception):
            await self.bus.wait_for_disconnect()

    # -- lower level: any call -----------------------------------------------------------------

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        interface: str = INTERFACE,
        destination: str = BUS_NAME,
        path: str = OBJECT_PATH,
        timeout: float | None = QUICK_TIMEOUT,
    ) -> list[Any]:
        """Call a method (mncd's by default) and return the reply's body; raises the API error,
        :class:`BusError`, :class:`DaemonUnavailable`, :class:`BusUnavailable` or
        :class:`CallTimeout`. For callers that need a signature the typed methods do not send."""
        message = _call_message(destination, path, interface, member, signature, list(body))
        try:
            reply = await asyncio.wait_for(self.bus.call(message), timeout)
        except TimeoutError as exc:
            raise CallTimeout(f"no answer to {member} within {timeout:g} s") from exc
        except (OSError, EOFError) as exc:
            raise BusUnavailable(f"lost the connection to the session bus: {exc}") from exc
        if reply is None:  # dbus-next answers None when the bus went away mid-call
            raise BusUnavailable("lost the connection to the session bus")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise error_for_reply(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
        return list(reply.body)

    async def call_bus(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> Any:
        """Call the bus itself (``org.freedesktop.DBus``); the first value of the reply."""
        reply = await self.call(
            member, signature, body, interface=DBUS_NAME, destination=DBUS_NAME, path=DBUS_PATH
        )
        return reply[0] if reply else None


def _call_message(
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str,
    body: list[Any],
    *,
    no_reply: bool = False,
) -> Message:
    return Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body,
        flags=MessageFlag.NO_REPLY_EXPECTED if no_reply else MessageFlag.NONE,
    )
