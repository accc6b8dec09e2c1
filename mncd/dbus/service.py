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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from dbus_next import DBusError, Message, MessageFlag, PropertyAccess, Variant
from dbus_next._private.constants import LITTLE_ENDIAN, PROTOCOL_VERSION, HeaderField
from dbus_next._private.marshaller import Marshaller
from dbus_next.aio import MessageBus
from dbus_next.constants import MessageType
from dbus_next.service import ServiceInterface, dbus_property, method, signal

from mncd.card import errors as card_errors
from mncd.card.digestinfo import HASHES, digest, digest_size
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pin import CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy, wipe
from mncd.daemon.manager import (
    CardManager,
    CertificateMissingError,
    CertificateView,
    LastTryError,
    NoCardError,
    NotSupportedError,
    PcscNotAvailableError,
)
from mncd.daemon.operations import SignResult
from mncd.dbus.api import ERROR_PREFIX, INTERFACE, MAX_DATA
from mncd.desktop.prompts import Caller, PromptCancelledError, PromptUnavailableError, with_pin
from mncd.i18n import translator
from mncd.jpki import certificates
from mncd.jpki.signatures import SignatureMismatch

log = logging.getLogger(__name__)
T = TypeVar("T")


def _(text: str) -> str:
    return translator().gettext(text)


ERROR = ERROR_PREFIX
#: GetStatus reuses its answer this long when nothing changed (days left follow the clock).
STATUS_MAX_AGE = 1.0
CALLER_CACHE_SIZE = 256


@dataclass(frozen=True)
class CallInfo:
    """Who sent the method call being handled, and whether it allows interaction."""

    sender: str = ""
    allow_interaction: bool = False


CALL: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("call", default=None)


def current_call() -> CallInfo:
    return CALL.get() or CallInfo()


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
    if isinstance(exc, PromptCancelledError):
        return ServiceError("Cancelled", "the user cancelled (操作はキャンセルされました)")
    if isinstance(exc, PromptUnavailableError):
        return ServiceError(
            "PinRequired",
            "no PIN dialog could be shown (is a pinentry program installed?); "
            "pass the PIN in the pin option",
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
    if isinstance(exc, card_errors.CardTimeoutError):
        return ServiceError(
            "Failed", "the card did not answer in time; take it out and insert it again"
        )
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
    if isinstance(exc, (SignatureMismatch, certificates.CertificateError)):
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

    def _find_message_handler(self, msg: Message) -> Any:
        handler = super()._find_message_handler(msg)
        if handler is not None or msg.interface != INTERFACE:
            return handler
        # One of our methods with arguments of the wrong types: a clear InvalidArgument rather
        # than dbus-next's UnknownMethod.
        expected = next(
            (
                m.in_signature
                for interface in self._path_exports.get(msg.path, [])
                for m in ServiceInterface._get_methods(interface)
                if m.name == msg.member and not m.disabled
            ),
            None,
        )
        if expected is None:
            return None

        def wrong_arguments(msg: Message, send_reply: Any) -> None:
            text = f"{msg.member} takes arguments ({expected}), not ({msg.signature})"
            send_reply(ServiceError("InvalidArgument", text)._as_message(msg))

        return wrong_arguments

    def _make_method_handler(self, interface: ServiceInterface, method: Any) -> Any:
        def reply_to(msg: Message, outcome: Callable[[], Any]) -> None:
            try:
                body, fds = ServiceInterface._fn_result_to_body(
                    outcome(), method.out_signature_tree
                )
                reply = Message.new_method_return(msg, method.out_signature, body, fds)
            except asyncio.CancelledError:
                reply = ServiceError("Cancelled", "the operation was cancelled")._as_message(msg)
            except Exception as exc:
                error = to_service_error(exc)
                if isinstance(exc, card_errors.CardError) and error.type == ERROR + "Failed":
                    # The card or reader misbehaved: worth a line, not a traceback.
                    log.warning("%s failed: %s", method.name, exc)
                elif error.type == ERROR + "Failed" and not isinstance(exc, ServiceError):
                    log.error("%s failed", method.name, exc_info=exc)
                reply = error._as_message(msg)
            if self.connected and not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                self.send(reply)

        if method.name == "GetStatus" and isinstance(interface, MyNumberCardInterface):
            # The most frequent call: answered at once with the body marshalled when the state
            # last changed (see MyNumberCardInterface.status_body).
            def status_handler(msg: Message, send_reply: Any) -> None:
                try:
                    reply = _PreMarshalledReply(msg, method.out_signature, interface.status_body())
                except Exception as exc:
                    log.error("GetStatus failed", exc_info=exc)
                    reply = to_service_error(exc)._as_message(msg)
                if self.connected and not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                    self.send(reply)

            return status_handler

        if not asyncio.iscoroutinefunction(method.fn):
            # Answered at once, from memory: no task, same error handling.
            def sync_handler(msg: Message, send_reply: Any) -> None:
                args = ServiceInterface._msg_body_to_args(msg)
                reply_to(msg, lambda: method.fn(interface, *args))

            return sync_handler

        def handler(msg: Message, send_reply: Any) -> None:
            context = contextvars.copy_context()
            allow = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
            context.run(CALL.set, CallInfo(msg.sender or "", allow))
            args = ServiceInterface._msg_body_to_args(msg)
            task = asyncio.get_running_loop().create_task(
                method.fn(interface, *args), context=context
            )
            task.add_done_callback(lambda done: reply_to(msg, done.result))

        return handler


class _PreMarshalledReply(Message):
    """A method return whose body was marshalled earlier (dbus-next 0.2's wire format: the body
    starts 8-aligned after the header, so its bytes do not depend on the header)."""

    def __init__(self, call: Message, signature: str, body: bytes) -> None:
        super().__init__(
            message_type=MessageType.METHOD_RETURN,
            reply_serial=call.serial,
            destination=call.sender,
            signature=signature,
        )
        self._marshalled_body = body

    def _marshall(self, negotiate_unix_fd: bool = False) -> bytes:
        fields = [[HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial)]]
        if self.destination:
            fields.append([HeaderField.DESTINATION.value, Variant("s", self.destination)])
        fields.append([HeaderField.SIGNATURE.value, Variant("g", self.signature)])
        header = Marshaller(
            "yyyyuua(yv)",
            [
                LITTLE_ENDIAN,
                self.message_type.value,
                self.flags.value,
                PROTOCOL_VERSION,
                len(self._marshalled_body),
                self.serial,
                fields,
            ],
        )
        header.marshall()
        header.align(8)
        return bytes(header.buffer) + self._marshalled_body


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
        "previous_fingerprint": Variant("s", view.previous_invalidated),
        "previous_state": Variant("s", "invalidated" if view.previous_invalidated else ""),
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

    def __init__(
        self, manager: CardManager, bus: MessageBus | None = None, pinentry: str = "pinentry"
    ) -> None:
        super().__init__(INTERFACE)
        self.manager = manager
        self.bus = bus
        self.pinentry_program = pinentry
        self._status: tuple[float, bytes] | None = None
        self._callers: dict[str, Caller] = {}
        self._properties: dict[str, Any] = {}

    # -- change notification (called by the daemon's listener) ----------------------------

    def refresh_properties(self) -> None:
        self._status = None  # something changed: GetStatus builds a fresh answer
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
    def GetStatus(self) -> "a{sv}":
        """Answered from memory (SafeMessageBus sends :meth:`status_body` directly)."""
        return self._build_status()

    def status_body(self) -> bytes:
        """GetStatus's reply body, marshalled; rebuilt when something changed or after 1 s
        (days left and expiry follow the clock)."""
        now = time.monotonic()
        if self._status is None or now - self._status[0] > STATUS_MAX_AGE:
            marshaller = Marshaller("a{sv}", [self._build_status()])
            marshaller.marshall()
            self._status = (now, bytes(marshaller.buffer))
        return self._status[1]

    def _build_status(self) -> dict[str, Variant]:
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
        _check_options(options, {"pin": "s", "sign-pin": "s", "interactive": "b"})
        caller = await self._caller()
        log.info("CheckPersonalData requested by %s", caller)
        pin_text = _option(options, "pin", "s", None)
        sign_text = _option(options, "sign-pin", "s", None)
        # Formats first: nothing reaches the card when either is malformed.
        card_info_pin = CARD_INFO_PIN.check(pin_text) if pin_text is not None else None
        try:
            sign_pin = SIGN_PASSWORD.check(sign_text) if sign_text is not None else None
        except card_errors.PinFormatError:
            wipe(card_info_pin or bytearray())
            raise
        try:
            if sign_pin is None and not self.manager.sign_certificate_known():
                sign_pin = await self._ask(
                    options,
                    caller,
                    SIGN_KEY.pin,
                    "sign",
                    _("read the signing certificate to compare it with your card"),
                )
            if card_info_pin is not None:
                changed = await self.manager.check_personal_data(card_info_pin, sign_pin)
            else:
                interactive_sign_pin = sign_pin

                async def attempt(pin: bytearray) -> list[str]:
                    return await self.manager.check_personal_data(pin, interactive_sign_pin)

                changed = await self._interactive(
                    options, caller, CARD_INFO_PIN, "card-info",
                    _("compare your card's personal data with the signing certificate"), attempt,
                )  # fmt: skip
        finally:
            for buffer in (card_info_pin, sign_pin):
                if buffer is not None:
                    wipe(buffer)
        return {
            "matches": Variant("b", not changed),
            "changed": Variant("as", changed),
            "state": Variant("s", self.manager.certificate_view("sign").state()),
        }

    async def _sign(
        self, key: KeySlot, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> list[bytes]:
        _check_options(options, self.KNOWN_OPTIONS)
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
        pin = key.pin.check(pin_text) if pin_text is not None else None  # before the card
        caller = await self._caller()
        log.info("%s requested by %s", "Sign" if key is SIGN_KEY else "Authenticate", caller)
        if pin is None:

            async def attempt(entered: bytearray) -> SignResult:
                return await self.manager.sign(key, hash_name, digest_value, entered, True)

            purpose = _("sign a document") if key is SIGN_KEY else _("prove who you are (log in)")
            result = await self._interactive(options, caller, key.pin, key.name, purpose, attempt)
        else:
            try:
                allow_last_try = _option(options, "allow-last-try", "b", False)
                result = await self.manager.sign(key, hash_name, digest_value, pin, allow_last_try)
            finally:
                wipe(pin)
        return [result.signature, result.certificate]

    async def _interactive(
        self,
        options: dict[str, Variant],
        caller: Caller,
        policy: PinPolicy,
        tries_key: str,
        purpose: str,
        attempt: Callable[[bytearray], Awaitable[T]],
    ) -> T:
        """Run ``attempt`` with a PIN the daemon asks the user for itself."""
        self._require_interactive(options, policy)
        return await with_pin(
            self.pinentry_program,
            caller,
            purpose,
            policy,
            lambda: self.manager.pin_tries_left(tries_key),
            attempt,
        )

    async def _ask(
        self, options: dict[str, Variant], caller: Caller, policy: PinPolicy, tries_key: str,
        purpose: str,
    ) -> bytearray:  # fmt: skip
        """Ask for a PIN that is checked later by the card (no retry loop here)."""

        async def keep(pin: bytearray) -> bytearray:
            return bytearray(pin)

        return await self._interactive(options, caller, policy, tries_key, purpose, keep)

    def _require_interactive(self, options: dict[str, Variant], policy: PinPolicy) -> None:
        # Interactive unless the caller says interactive=false; a caller that also sets D-Bus's
        # ALLOW_INTERACTIVE_AUTHORIZATION flag is logged as expecting a prompt.
        if current_call().allow_interaction:
            log.debug("caller allows interactive authorization")
        if not _option(options, "interactive", "b", True):
            raise ServiceError(
                "PinRequired",
                f"the {policy.label_en} is needed and interactive=false forbids asking "
                f"({policy.label_ja}が必要です)",
            )

    async def _caller(self) -> Caller:
        sender = current_call().sender
        if not sender or self.bus is None:
            return Caller("unknown program", 0)
        if sender in self._callers:  # unique names are never reused on a bus
            return self._callers[sender]
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
            return Caller(sender, 0)
        if len(self._callers) >= CALLER_CACHE_SIZE:
            self._callers.pop(next(iter(self._callers)))
        caller = self._callers[sender] = Caller(executable_of(pid), pid)
        return caller


def _check_options(options: dict[str, Variant], known: dict[str, str]) -> None:
    for name in options:
        if name not in known:
            raise ServiceError("InvalidArgument", f"unknown option {name!r}")
        _option(options, name, known[name], None)


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
