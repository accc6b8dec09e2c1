"""A typed asyncio client of mncd's D-Bus API, ``io.github.mncd.MyNumberCard1``.

::

    from mncd.client import MyNumberCard

    async with await MyNumberCard.connect() as card:
        status = await card.get_status()
        print(status.state, status.auth.days_left)
        signed = await card.sign(b"document")   # the daemon asks the user for the PIN itself

Errors of the API arrive as the exceptions of :mod:`mncd.errors` (``NoCard``,
``PinIncorrect``, ...); :class:`DaemonUnavailable` when mncd is not running and cannot be
started, :class:`BusUnavailable` when there is no session bus, :class:`BusError` for other
errors of the bus. This is the only module outside :mod:`mncd.dbus` that builds D-Bus messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from types import MappingProxyType
from typing import Any, NamedTuple

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.errors import AuthError, InvalidAddressError

from mncd import errors
from mncd.dbus.api import BUS_NAME, DIGEST_INTERFACE, INTERFACE, OBJECT_PATH

__all__ = [
    "BusError",
    "BusUnavailable",
    "CallTimeout",
    "CertificateStatus",
    "DaemonUnavailable",
    "Event",
    "KnownCard",
    "MyNumberCard",
    "PersonalDataCheck",
    "PinCounter",
    "PinStatus",
    "SignedData",
    "Status",
]

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"

#: Calls answered from the daemon's memory (GetStatus, GetCertificate, properties).
QUICK_TIMEOUT = 25.0
#: Calls that may show a PIN dialog: a person may take minutes to find the card and type.
DIALOG_TIMEOUT = 600.0

# Replies of the bus (not the daemon) meaning the daemon is not running and could not be started.
_UNAVAILABLE_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoServer",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)
_UNAVAILABLE_PREFIXES = ("org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")


# -- errors that are not the daemon's ----------------------------------------------------------


class ClientError(Exception):
    """A failure on the way to the daemon (not an answer of the daemon)."""


class BusUnavailable(ClientError):
    """The session bus cannot be reached, or the connection to it was lost."""


class BusError(ClientError):
    """An error reply that is not one of mncd's API errors (from the bus, or a foreign one)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text or name)
        self.name = name
        self.text = text


class DaemonUnavailable(BusError):
    """mncd is not running on this bus and could not be started (no activation file, ...)."""


class CallTimeout(ClientError):
    """The daemon did not answer in time."""


def error_for_reply(name: str, text: str) -> Exception:
    """The exception for an error reply named ``name``."""
    api_error = errors.from_dbus_name(name, text)
    if api_error is not None:
        return api_error
    if name in _UNAVAILABLE_ERRORS or name.startswith(_UNAVAILABLE_PREFIXES):
        return DaemonUnavailable(name, text)
    return BusError(name, text)


# -- typed data ----------------------------------------------------------------------------------
# Immutable records, as NamedTuples: mncctl defines them on every start, and a NamedTuple takes a
# seventh of the time a frozen dataclass does.


def plain(value: Any) -> Any:
    """D-Bus values (Variants, dicts, lists, bytes) as plain Python values (bytes as hex)."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def _time(value: Any) -> dt.datetime | None:
    seconds = _int(value, 0)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


class CertificateStatus(NamedTuple):
    """One certificate (``auth`` or ``sign``) as GetStatus describes it; never personal data."""

    present: bool = False
    source: str = "none"  #: card, cache or none
    state: str = "unknown"  #: valid, expiring, expired, invalidated or unknown
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    days_left: int | None = None  #: None when the expiry date is not known
    serial: str = ""
    fingerprint: str = ""  #: SHA-256, hex
    issuer: str = ""
    algorithm: str = ""
    pin_tries_left: int | None = None  #: None when not known
    previous_fingerprint: str = ""  #: the signing certificate the card held before, if revoked
    previous_state: str = ""
    #: mncd holds the certificate itself, read from the card in the reader since it was inserted
    #: (for ``sign``: CheckPersonalData then needs no signing password)
    certificate_held: bool = False

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> CertificateStatus:
        not_after = _time(data.get("not_after"))
        tries = _int(data.get("pin_tries_left"), -1)
        return cls(
            present=data.get("present") is True,
            source=_str(data.get("source")) or "none",
            state=_str(data.get("state")) or "unknown",
            not_before=_time(data.get("not_before")),
            not_after=not_after,
            days_left=_int(data.get("days_left"), 0) if not_after else None,
            serial=_str(data.get("serial")),
            fingerprint=_str(data.get("fingerprint")),
            issuer=_str(data.get("issuer")),
            algorithm=_str(data.get("algorithm")),
            pin_tries_left=tries if tries >= 0 else None,
            previous_fingerprint=_str(data.get("previous_fingerprint")),
            previous_state=_str(data.get("previous_state")),
            certificate_held=data.get("certificate_held") is True,
        )


class KnownCard(NamedTuple):
    """A card the daemon remembers (GetStatus ``cards``)."""

    card_id: str
    last_seen: dt.datetime | None = None
    not_after: dt.datetime | None = None  #: its authentication certificate's
    renewed_to: str = ""  #: the card id its renewed certificates have, if renewed

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> KnownCard:
        return cls(
            card_id=_str(data.get("card_id")),
            last_seen=_time(data.get("last_seen")),
            not_after=_time(data.get("not_after")),
            renewed_to=_str(data.get("renewed_to")),
        )


class Status(NamedTuple):
    """GetStatus: the daemon's state, readers, and both certificates."""

    #: pcsc-unavailable, no-reader, no-card, reading, card-present, unknown-card or
    #: unreadable-card
    state: str = ""
    readers: tuple[str, ...] = ()
    reader: str = ""  #: the reader holding the card present or being read, if any
    token: str = ""  #: card, android, iphone, juki (only card is served)
    unsupported_readers: tuple[str, ...] = ()
    card_id: str = ""  #: the card described (what ``forget_card`` takes)
    cards: tuple[KnownCard, ...] = ()  #: every card the daemon remembers, latest first
    auth: CertificateStatus = CertificateStatus()
    sign: CertificateStatus = CertificateStatus()
    #: Every key as the daemon sent it, as plain values (JSON-ready; keys a newer daemon adds).
    raw: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> Status:
        """From GetStatus's ``a{sv}`` (Variants or plain values)."""
        data = plain(body)

        def certificate(which: str) -> CertificateStatus:
            value = data.get(which)
            return (
                CertificateStatus.from_plain(value)
                if isinstance(value, Mapping)
                else (CertificateStatus())
            )

        return cls(
            state=_str(data.get("state")),
            readers=_strings(data.get("readers")),
            reader=_str(data.get("reader")),
            token=_str(data.get("token")),
            unsupported_readers=_strings(data.get("unsupported_readers")),
            card_id=_str(data.get("card_id")),
            cards=tuple(
                KnownCard.from_plain(item)
                for item in data.get("cards", ())
                if isinstance(item, Mapping)
            ),
            auth=certificate("auth"),
            sign=certificate("sign"),
            raw=data,
        )

    def certificate(self, which: str) -> CertificateStatus:
        """``auth`` or ``sign``."""
        return {"auth": self.auth, "sign": self.sign}[which]


class SignedData(NamedTuple):
    """A signature from the card, already verified by the daemon, and its certificate (DER)."""

    signature: bytes
    certificate: bytes


class PersonalDataCheck(NamedTuple):
    """CheckPersonalData: whether the card's data still match the signing certificate."""

    matches: bool
    changed: tuple[str, ...]  #: kinds of data that differ (name, address, ...), never values
    state: str  #: the signing certificate's state afterwards


class PinCounter(NamedTuple):
    """One PIN's counter as GetPinStatus read it from the card."""

    present: bool = False
    tries_left: int | None = None  #: None when the card has no such PIN
    max_tries: int = 0

    @classmethod
    def from_plain(cls, data: Any) -> PinCounter:
        if not isinstance(data, Mapping):
            return cls()
        tries = _int(data.get("tries_left"), -1)
        present = data.get("present") is True
        return cls(
            present, tries if present and tries >= 0 else None, _int(data.get("max_tries"), 0)
        )


class PinStatus(NamedTuple):
    """GetPinStatus: the tries left on each PIN (``auth``, ``sign``, ``card-info``), live."""

    reader: str = ""
    auth: PinCounter = PinCounter()
    sign: PinCounter = PinCounter()
    card_info: PinCounter = PinCounter()
    #: Every key as the daemon sent it, as plain values.
    raw: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> PinStatus:
        data = plain(body)
        return cls(
            reader=_str(data.get("reader")),
            auth=PinCounter.from_plain(data.get("auth")),
            sign=PinCounter.from_plain(data.get("sign")),
            card_info=PinCounter.from_plain(data.get("card-info")),
            raw=data,
        )

    def counter(self, which: str) -> PinCounter:
        """``auth``, ``sign`` or ``card-info``."""
        return {"auth": self.auth, "sign": self.sign, "card-info": self.card_info}[which]


class Event(NamedTuple):
    """A signal of the daemon: ``CardInserted``, ``CardRemoved``, ``CertificateStatusChanged``
    (args as a list), ``PropertiesChanged`` (args as a dict), ``DaemonStarted`` or
    ``DaemonStopped`` (the name got or lost its owner)."""

    name: str
    args: list[Any] | dict[str, Any]


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


# -- the client ----------------------------------------------------------------------------------


#: Object paths this process exports for ``digest-from`` (one per signature).
_DIGEST_PATHS = itertools.count(1)
DIGEST_PATH_PREFIX = "/io/github/mncd/client/digest"


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
        path = f"{DIGEST_PATH_PREFIX}/{next(_DIGEST_PATHS)}"
        failure: list[BaseException] = []
        answered = False
        tasks: set[asyncio.Task[None]] = set()

        async def answer(message: Message) -> None:
            nonlocal answered
            try:
                # Only the daemon may ask (a unique name is never reused), and only once.
                owner = await self.call_bus("GetNameOwner", "s", [BUS_NAME])
                if message.sender != owner or answered:
                    self.bus.send(Message.new_error(message, DIGEST_INTERFACE + ".Error.Refused",
                                                    "not asked by mncd"))  # fmt: skip
                    return
            except Exception:  # the bus cannot say who owns mncd's name: refuse
                self.bus.send(Message.new_error(message, DIGEST_INTERFACE + ".Error.Refused",
                                                "cannot tell who asks"))  # fmt: skip
                return
            answered = True
            try:
                certificate, hash_name = bytes(message.body[0]), message.body[1]
                if hash_name != hash:
                    raise ValueError(f"the daemon asked for {hash_name}, not {hash}")
                value = await digest_for(certificate)
                reply = Message.new_method_return(message, "ay", [bytes(value)])
            except Exception as exc:
                failure.append(exc)
                reply = Message.new_error(message, DIGEST_INTERFACE + ".Error.Refused", str(exc))
            self.bus.send(reply)

        def on_message(message: Message) -> bool:
            if message.message_type != MessageType.METHOD_CALL or message.path != path:
                return False
            if (
                message.interface != DIGEST_INTERFACE
                or message.member != "Digest"
                or message.signature != "ays"
            ):
                self.bus.send(Message.new_error(message, DIGEST_INTERFACE + ".Error.Refused",
                                                "only Digest(ay, s) is served here"))  # fmt: skip
                return True
            task = asyncio.ensure_future(answer(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return True

        options = _options(pin=pin, interactive=interactive, allow_last_try=allow_last_try or None)
        options["digest-from"] = Variant("o", path)
        self.bus.add_message_handler(on_message)
        try:
            signature, certificate = await self.call(
                "Sign", "aysa{sv}", [b"", hash, options], timeout=DIALOG_TIMEOUT
            )
        except errors.Cancelled as exc:
            if failure:  # the daemon cancelled because digest_for failed: that is the reason
                raise failure[0] from exc
            raise
        finally:
            self.bus.remove_message_handler(on_message)
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
