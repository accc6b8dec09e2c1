"""The D-Bus interface ``io.github.mncd.MyNumberCard1``: validates, delegates, maps errors.

Only errors named under ``io.github.mncd.MyNumberCard1.Error`` reach callers, with short texts;
no traceback, path or PIN ever does. :class:`SafeMessageBus` replaces dbus-next's handler for
async methods, which would otherwise send tracebacks to callers and log every D-Bus error as an
unhandled exception; it also records who called, for logs and prompts.
"""

import asyncio
import contextvars
import logging
import os
from typing import Any, ClassVar

from dbus_next import DBusError, Message, MessageFlag, PropertyAccess, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, dbus_property, method, signal

from . import certs
from .card import errors as card_errors
from .card.digestinfo import HASHES, digest, digest_size
from .card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from .card.pin import CARD_INFO_PIN, SIGN_PASSWORD, wipe
from .manager import (
    CardManager,
    CertificateMissingError,
    CertificateView,
    LastTryError,
    NoCardError,
    NotSupportedError,
    PcscNotAvailableError,
)
from .signing import SignatureMismatch

log = logging.getLogger(__name__)

BUS_NAME = "io.github.mncd.MyNumberCard1"
OBJECT_PATH = "/io/github/mncd/MyNumberCard1"
INTERFACE = "io.github.mncd.MyNumberCard1"
ERROR = INTERFACE + ".Error."
#: Largest ``data`` accepted by Sign/Authenticate; hash bigger input yourself and pass digest=true.
MAX_DATA = 1024 * 1024

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


class ServiceError(DBusError):
    """A D-Bus error of this interface (``io.github.mncd.MyNumberCard1.Error.<name>``)."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(ERROR + name, text)


def to_service_error(exc: BaseException) -> ServiceError:
    """The caller-facing error for an exception from the layers below."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, card_errors.PinFormatError):
        return ServiceError("PinFormat", str(exc))
    if isinstance(exc, card_errors.PinIncorrectError):
        return ServiceError(
            "PinIncorrect",
            f"{exc} (暗証番号が違います。残り{exc.tries_left}回)",
        )
    if isinstance(exc, card_errors.PinBlockedError):
        return ServiceError(
            "PinBlocked",
            f"{exc}; reset it at your municipal office "
            "(暗証番号がロックされました。市区町村の窓口で再設定してください)",
        )
    if isinstance(exc, LastTryError):
        return ServiceError(
            "PinRequired",
            f"only one try is left for the {exc.label}: a wrong PIN would block it until it is "
            "reset at the municipal office; set allow-last-try to send it anyway "
            "(残り1回です。間違えるとロックされます)",
        )
    if isinstance(exc, card_errors.SecurityStatusError):
        return ServiceError("PinRequired", "the card needs the PIN for this")
    if isinstance(exc, (card_errors.CardRemovedError, card_errors.CardResetError)):
        return ServiceError("CardRemoved", "the card was removed or reset during the operation")
    if isinstance(exc, (NoCardError, card_errors.NoCardError, card_errors.NoReaderError)):
        return ServiceError(
            "NoCard", "no My Number Card is inserted (マイナンバーカードがありません)"
        )
    if isinstance(exc, (PcscNotAvailableError, card_errors.PcscUnavailableError)):
        return ServiceError("PcscUnavailable", "the PC/SC service (pcscd) is not available")
    if isinstance(exc, CertificateMissingError):
        return ServiceError("CertificateMissing", str(exc))
    if isinstance(exc, card_errors.KeyUnusableError):
        return ServiceError(
            "CertificateInvalid",
            "the card refuses to use this key: its certificate can no longer be used",
        )
    if isinstance(exc, (SignatureMismatch, certs.CertificateError)):
        return ServiceError(
            "CertificateInvalid",
            "the card's answer does not verify against its certificate; nothing was returned",
        )
    if isinstance(exc, card_errors.NotJpkiCardError):
        return ServiceError("NotSupported", "this card is not a My Number Card")
    if isinstance(exc, NotSupportedError):
        return ServiceError("NotSupported", str(exc))
    if isinstance(exc, card_errors.CardError):
        return ServiceError("Failed", "the card did not complete the operation")
    return ServiceError("Failed", "internal error in mncd; see its log")


class SafeMessageBus(MessageBus):
    """dbus-next's asyncio bus, with method handlers that never leak or mis-log errors."""

    def _make_method_handler(self, interface: ServiceInterface, method: Any) -> Any:
        if not asyncio.iscoroutinefunction(method.fn):
            return super()._make_method_handler(interface, method)

        def handler(msg: Message, send_reply: Any) -> None:
            def done(task: asyncio.Task) -> None:
                try:
                    result = task.result()
                    body, fds = ServiceInterface._fn_result_to_body(
                        result, method.out_signature_tree
                    )
                    reply = Message.new_method_return(msg, method.out_signature, body, fds)
                except asyncio.CancelledError:
                    reply = ServiceError("Cancelled", "the operation was cancelled")._as_message(
                        msg
                    )
                except Exception as exc:
                    error = to_service_error(exc)
                    if error.type == ERROR + "Failed" and not isinstance(exc, ServiceError):
                        log.error("%s failed", method.name, exc_info=exc)
                    reply = error._as_message(msg)
                if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                    self.send(reply)

            context = contextvars.copy_context()
            context.run(CALLER.set, msg.sender or "")
            args = ServiceInterface._msg_body_to_args(msg)
            task = asyncio.get_running_loop().create_task(
                method.fn(interface, *args), context=context
            )
            task.add_done_callback(done)

        return handler


def _view_to_dbus(view: CertificateView) -> dict[str, Variant]:
    s = view.summary
    return {
        "present": Variant("b", view.present),
        "source": Variant("s", view.source),
        "state": Variant("s", view.state()),
        "not_before": Variant("x", int(s.not_before.timestamp()) if s else 0),
        "not_after": Variant("x", int(s.not_after.timestamp()) if s else 0),
        "days_left": Variant("i", s.days_left() if s else 0),
        "serial": Variant("s", s.serial if s else ""),
        "fingerprint": Variant("s", s.fingerprint if s else ""),
        "issuer": Variant("s", s.issuer if s else ""),
        "algorithm": Variant("s", s.algorithm if s else ""),
        "pin_tries_left": Variant("i", view.pin_tries_left),
    }


def _option(options: dict[str, Variant], name: str, signature: str, default: Any) -> Any:
    value = options.get(name)
    if value is None:
        return default
    if value.signature != signature:
        raise ServiceError("InvalidArgument", f"option {name!r} must have type {signature!r}")
    return value.value


class MyNumberCardInterface(ServiceInterface):
    """The exported object."""

    KNOWN_OPTIONS: ClassVar[dict[str, str]] = {
        "pin": "s",
        "digest": "b",
        "hash": "s",
        "interactive": "b",
        "allow-last-try": "b",
    }

    def __init__(self, manager: CardManager, bus: MessageBus | None = None) -> None:
        super().__init__(INTERFACE)
        self.manager = manager
        self.bus = bus
        self._properties: dict[str, Any] = {}

    # -- change notification (called by the daemon's listener) ----------------------------

    def refresh_properties(self) -> None:
        current = {
            "State": self.manager.state(),
            "CardPresent": self.manager.current() is not None,
            "Readers": list(self.manager.readers),
        }
        changed = {k: v for k, v in current.items() if self._properties.get(k) != v}
        self._properties = current
        if changed:
            self.emit_properties_changed(changed)

    # -- properties and signals ------------------------------------------------------------

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> "s":
        return self.manager.state()

    @dbus_property(access=PropertyAccess.READ)
    def CardPresent(self) -> "b":
        return self.manager.current() is not None

    @dbus_property(access=PropertyAccess.READ)
    def Readers(self) -> "as":
        return list(self.manager.readers)

    @signal()
    def CardInserted(self, reader: str) -> "s":
        return reader

    @signal()
    def CardRemoved(self, reader: str) -> "s":
        return reader

    @signal()
    def CertificateStatusChanged(self, which: str, state: str) -> "ss":
        return [which, state]

    # -- methods ---------------------------------------------------------------------------

    @method()
    async def GetStatus(self) -> "a{sv}":
        live = self.manager.current()
        token = live.snapshot.token.kind.value if live and live.snapshot else ""
        if not token and self.manager.last_record is not None:
            token = self.manager.last_record.token
        return {
            "state": Variant("s", self.manager.state()),
            "readers": Variant("as", list(self.manager.readers)),
            "reader": Variant("s", live.reader if live else ""),
            "token": Variant("s", token),
            "unsupported_readers": Variant("as", self.manager.unsupported_readers()),
            "auth": Variant("a{sv}", _view_to_dbus(self.manager.certificate_view("auth"))),
            "sign": Variant("a{sv}", _view_to_dbus(self.manager.certificate_view("sign"))),
        }

    @method()
    async def GetCertificate(self, which: "s") -> "ay":
        if which not in ("auth", "auth-ca", "sign-ca"):
            raise ServiceError(
                "InvalidArgument",
                "which must be auth, auth-ca or sign-ca (the signing certificate comes with Sign)",
            )
        return self.manager.certificate(which)

    @method()
    async def Sign(self, data: "ay", hash: "s", options: "a{sv}") -> "ayay":
        return await self._sign(SIGN_KEY, data, hash, options)

    @method()
    async def Authenticate(self, challenge: "ay", options: "a{sv}") -> "ayay":
        hash_name = _option(options, "hash", "s", "sha256")
        return await self._sign(AUTH_KEY, challenge, hash_name, options)

    @method()
    async def CheckPersonalData(self, options: "a{sv}") -> "a{sv}":
        """Compare the card's basic four information with the signing certificate."""
        known = {"pin": "s", "sign-pin": "s", "interactive": "b"}
        for name in options:
            if name not in known:
                raise ServiceError("InvalidArgument", f"unknown option {name!r}")
            _option(options, name, known[name], None)
        pin_text = _option(options, "pin", "s", None)
        if pin_text is None:
            raise ServiceError(
                "PinRequired",
                f"the {CARD_INFO_PIN.label_en} is needed "
                f"({CARD_INFO_PIN.label_ja}を入力してください)",
            )
        card_info_pin = CARD_INFO_PIN.check(pin_text)
        sign_text = _option(options, "sign-pin", "s", None)
        try:
            sign_pin = SIGN_PASSWORD.check(sign_text) if sign_text is not None else None
        except card_errors.PinFormatError:
            wipe(card_info_pin)
            raise
        try:
            log.info("CheckPersonalData requested by %s", await self._describe_caller())
            changed = await self.manager.check_personal_data(card_info_pin, sign_pin)
        finally:
            wipe(card_info_pin)
            if sign_pin is not None:
                wipe(sign_pin)
        return {
            "matches": Variant("b", not changed),
            "changed": Variant("as", changed),
            "state": Variant("s", self.manager.certificate_view("sign").state()),
        }

    async def _sign(
        self, key: KeySlot, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> list[bytes]:
        for name in options:
            if name not in self.KNOWN_OPTIONS:
                raise ServiceError("InvalidArgument", f"unknown option {name!r}")
            _option(options, name, self.KNOWN_OPTIONS[name], None)
        if hash_name not in HASHES:
            raise ServiceError("InvalidArgument", f"hash must be one of {', '.join(HASHES)}")
        if not data:
            raise ServiceError("InvalidArgument", "nothing to sign")
        if len(data) > MAX_DATA:
            raise ServiceError(
                "InvalidArgument",
                f"data is larger than {MAX_DATA} bytes; hash it and pass digest=true",
            )
        if _option(options, "digest", "b", False):
            if len(data) != digest_size(hash_name):
                raise ServiceError(
                    "InvalidArgument", f"a {hash_name} digest is {digest_size(hash_name)} bytes"
                )
            digest_value = bytes(data)
        else:
            digest_value = digest(hash_name, bytes(data))
        pin_text = _option(options, "pin", "s", None)
        if pin_text is None:
            raise ServiceError(
                "PinRequired",
                f"the {key.pin.label_en} is needed ({key.pin.label_ja}を入力してください)",
            )
        pin = key.pin.check(pin_text)  # PinFormat before anything touches the card
        try:
            caller = await self._describe_caller()
            log.info("%s requested by %s", "Sign" if key is SIGN_KEY else "Authenticate", caller)
            allow_last_try = _option(options, "allow-last-try", "b", False)
            result = await self.manager.sign(key, hash_name, digest_value, pin, allow_last_try)
        finally:
            wipe(pin)
        return [result.signature, result.certificate]

    async def _describe_caller(self) -> str:
        sender = CALLER.get()
        if not sender or self.bus is None:
            return "an unknown caller"
        try:
            reply = await self.bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="GetConnectionUnixProcessID",
                    signature="s",
                    body=[sender],
                )
            )
            pid = int(reply.body[0])
        except Exception:
            return sender
        return f"{executable_of(pid)} (pid {pid}, {sender})"


def executable_of(pid: int) -> str:
    """The executable of ``pid``, or its command name when the link is unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            return "unknown program"
