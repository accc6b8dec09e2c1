"""The D-Bus interface ``io.github.mncd.MyNumberCard1``: validates, delegates, maps errors.

Only the errors of :mod:`mncd.errors` reach callers, with short texts; no traceback, path or
PIN ever does. Every exception from the layers below becomes one of them through
:data:`ERROR_TABLE`.
"""

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dbus_next import DBusError, PropertyAccess, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import dbus_property, method, signal

from mncd import errors
from mncd.card import errors as card_errors
from mncd.card.digestinfo import HASHES, digest, digest_size
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy, wipe
from mncd.daemon.cache import CardRecord
from mncd.daemon.errors import DigestUnavailableError, LastTryError, PinChangeUnconfirmedError
from mncd.daemon.manager import CardManager, CertificateView
from mncd.daemon.pingate import CardChangedError, PinRequest
from mncd.dbus.api import DIGEST_INTERFACE, DIGEST_TIMEOUT, INTERFACE, MAX_DATA
from mncd.dbus.bus import CallError, ExportedInterface, call, current_call, marshall_body
from mncd.desktop.errors import PromptCancelledError, PromptUnavailableError
from mncd.i18n import translator
from mncd.jpki.errors import CertificateError, SignatureMismatch

if TYPE_CHECKING:
    from mncd.daemon.callers import Caller

log = logging.getLogger(__name__)
T = TypeVar("T")


def _(text: str) -> str:
    return translator().gettext(text)


#: GetStatus reuses its answer this long when nothing changed (days left follow the clock).
STATUS_MAX_AGE = 1.0
CALLER_CACHE_SIZE = 256

Text = str | Callable[[Any], str]

#: How exceptions from the layers below reach callers: the first entry whose types match gives
#: the API error and its text (a string, or a function of the exception). Subclasses first.
ERROR_TABLE: tuple[tuple[tuple[type[BaseException], ...], type[errors.MncdError], Text], ...] = (
    ((card_errors.PinFormatError,), errors.PinFormat, str),
    (
        (card_errors.PinIncorrectError,),
        errors.PinIncorrect,
        lambda exc: f"{exc} (暗証番号が違います。残り{exc.tries_left}回)",
    ),
    (
        (card_errors.PinBlockedError,),
        errors.PinBlocked,
        lambda exc: (
            f"{exc}; reset it at your municipal office "
            "(暗証番号がロックされました。市区町村の窓口で再設定してください)"
        ),
    ),
    ((PromptCancelledError,), errors.Cancelled, "the user cancelled (操作はキャンセルされました)"),
    (
        (DigestUnavailableError,),
        errors.Cancelled,
        lambda exc: f"{exc}; nothing was signed (署名していません)",
    ),
    (
        (PromptUnavailableError,),
        errors.PinRequired,
        lambda exc: f"no PIN dialog could be shown ({exc}); pass the PIN in the pin option",
    ),
    (
        (LastTryError,),
        errors.PinRequired,
        lambda exc: (
            f"only one try is left for the {exc.label}: a wrong PIN would block it "
            "until it is reset at the municipal office; set allow-last-try to send it anyway "
            "(残り1回です。間違えるとロックされます)"
        ),
    ),
    ((card_errors.SecurityStatusError,), errors.PinRequired, "the card needs the PIN for this"),
    (
        (card_errors.CardInUseError,),
        errors.Busy,
        "another program is using the card; try again when it has finished",
    ),
    (
        (card_errors.PinChangeUnsupportedError,),
        errors.NotSupported,
        "this card does not take the PIN change command mncd sends",
    ),
    (
        (card_errors.PinChangeRefusedError,),
        errors.Failed,
        lambda exc: f"{exc} (カードが暗証番号の変更を拒否しました)",
    ),
    (
        (card_errors.CardTimeoutError,),
        errors.Failed,
        "the card did not answer in time; take it out and insert it again",
    ),
    (
        (CardChangedError,),
        errors.CardRemoved,
        "the card was changed since the PIN was asked for; nothing was sent to it",
    ),
    (
        (card_errors.CardRemovedError, card_errors.CardResetError),
        errors.CardRemoved,
        "the card was removed or reset during the operation",
    ),
    (
        (card_errors.NoCardError, card_errors.NoReaderError),
        errors.NoCard,
        "no My Number Card is inserted (マイナンバーカードがありません)",
    ),
    (
        (card_errors.PcscUnavailableError,),
        errors.PcscUnavailable,
        "the PC/SC service (pcscd) is not available",
    ),
    (
        (card_errors.KeyUnusableError,),
        errors.CertificateInvalid,
        "the card refuses to use this key: its certificate can no longer be used",
    ),
    (
        (SignatureMismatch, CertificateError),
        errors.CertificateInvalid,
        "the card's answer does not verify against its certificate; nothing was returned",
    ),
    ((card_errors.NotJpkiCardError,), errors.NotSupported, "this card is not a My Number Card"),
    ((card_errors.CardError,), errors.Failed, "the card did not complete the operation"),
)


#: The PINs ChangePin and GetPinStatus know, by the name callers use.
PINS: dict[str, PinPolicy] = {
    policy.name: policy for policy in (AUTH_PIN, SIGN_PASSWORD, CARD_INFO_PIN)
}


def pin_unchanged_text(policy: PinPolicy) -> str:
    """What a failed ChangePin adds when the card certainly kept the current PIN."""
    return (
        f"your {policy.label_en} was not changed: the current one is still valid "
        f"({policy.label_ja}は変更されていません。現在のものが引き続き有効です)"
    )


def pin_unconfirmed_text(policy: PinPolicy) -> str:
    """What a failed ChangePin adds when the card got the change but never answered it."""
    return (
        f"the card did not confirm the change: your current {policy.label_en} should still be "
        "valid; use the new one only if the card refuses the current one "
        f"(カードが変更を確認できませんでした。現在の{policy.label_ja}が有効なはずです。"
        "拒否された場合のみ新しいものを使ってください)"
    )


def to_api_error(exc: BaseException) -> errors.MncdError:
    """The API error a caller gets for an exception from the layers below."""
    if isinstance(exc, errors.MncdError):
        return exc
    for types, api_error, text in ERROR_TABLE:
        if isinstance(exc, types):
            return api_error(text if isinstance(text, str) else text(exc))
    return errors.Failed("internal error in mncd; see its log")


def to_dbus_error(exc: errors.MncdError) -> DBusError:
    return DBusError(exc.dbus_name(), exc.text)


def _view_to_dbus(view: CertificateView, now: dt.datetime) -> dict[str, Variant]:
    s = view.summary
    return {
        "present": Variant("b", view.present),
        "source": Variant("s", view.source),
        "state": Variant("s", view.state(now)),
        "not_before": Variant("x", int(s.not_before.timestamp()) if s else 0),
        "not_after": Variant("x", int(s.not_after.timestamp()) if s else 0),
        "days_left": Variant("i", s.days_left(now) if s else 0),
        "serial": Variant("s", s.serial if s else ""),
        "fingerprint": Variant("s", s.fingerprint if s else ""),
        "issuer": Variant("s", s.issuer if s else ""),
        "algorithm": Variant("s", s.algorithm if s else ""),
        "pin_tries_left": Variant("i", view.pin_tries_left),
        "previous_fingerprint": Variant("s", view.previous_invalidated),
        "previous_state": Variant("s", "invalidated" if view.previous_invalidated else ""),
        "certificate_held": Variant("b", view.held),
    }


def _card_to_dbus(record: CardRecord) -> dict[str, Variant]:
    """A known card as GetStatus lists it: its id, when it was last seen and, for a card whose
    certificates were renewed, the id it has now."""
    auth = record.auth.summary if record.auth else None
    return {
        "card_id": Variant("s", record.card_id),
        "last_seen": Variant("x", int(record.last_seen)),
        "not_after": Variant("x", int(auth.not_after.timestamp()) if auth else 0),
        "renewed_to": Variant("s", record.renewed_to or ""),
    }


def _option(options: dict[str, Variant], name: str, signature: str, default: Any) -> Any:
    value = options.get(name)
    if value is None:
        return default
    if value.signature != signature:
        raise errors.InvalidArgument(f"option {name!r} must have type {signature!r}")
    return value.value


class MyNumberCardInterface(ExportedInterface):
    """The exported object."""

    #: Options of both Sign and Authenticate.
    PIN_OPTIONS: ClassVar[dict[str, str]] = {
        "pin": "s",
        "digest": "b",
        "interactive": "b",
        "allow-last-try": "b",
    }
    #: Sign's options (its hash is an argument, so ``hash`` is not one of them).
    SIGN_OPTIONS: ClassVar[dict[str, str]] = {**PIN_OPTIONS, "digest-from": "o"}
    #: Authenticate's options: the common ones, and the hash (it has no hash argument).
    AUTHENTICATE_OPTIONS: ClassVar[dict[str, str]] = {**PIN_OPTIONS, "hash": "s"}
    #: ChangePin's options: the current and the new PIN (both or neither), as for Sign.
    CHANGE_PIN_OPTIONS: ClassVar[dict[str, str]] = {
        "pin": "s",
        "new-pin": "s",
        "interactive": "b",
        "allow-last-try": "b",
    }

    def __init__(self, manager: CardManager, bus: MessageBus | None = None) -> None:
        super().__init__(INTERFACE)
        self.manager = manager
        self.bus = bus
        self._status: tuple[float, bytes] | None = None
        self._callers: dict[str, "Caller"] = {}
        self._properties: dict[str, Any] = {}

    # -- how the bus answers (see mncd.dbus.bus.ExportedInterface) ---------------------------

    def error_reply(self, method: str, exc: BaseException) -> DBusError:
        if isinstance(exc, asyncio.CancelledError):
            return to_dbus_error(errors.Cancelled("the operation was cancelled"))
        error = to_api_error(exc)
        if isinstance(error, errors.Failed) and not isinstance(exc, errors.MncdError):
            if isinstance(exc, card_errors.CardError):
                # The card or reader misbehaved: worth a line, not a traceback.
                log.warning("%s failed: %s", method, exc)
            else:
                log.error("%s failed", method, exc_info=exc)
        return to_dbus_error(error)

    def wrong_arguments(self, method: str, expected: str, given: str) -> DBusError:
        return to_dbus_error(
            errors.InvalidArgument(f"{method} takes arguments ({expected}), not ({given})")
        )

    def premarshalled(self, method: str) -> Callable[[], bytes] | None:
        # The most frequent call: answered at once with the body marshalled when the state
        # last changed (see status_body).
        return self.status_body if method == "GetStatus" else None

    # -- change notification (called by the daemon's listener) ----------------------------

    def refresh_properties(self) -> None:
        self._status = None  # something changed: GetStatus builds a fresh answer
        current = {
            "State": self.manager.state(),
            "CardPresent": self.manager.current() is not None,
            "Readers": list(self.manager.readers),
            "CertificateStates": self.manager.certificate_states(),
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

    @dbus_property(access=PropertyAccess.READ)
    def CertificateStates(self) -> "a{ss}":
        return self.manager.certificate_states()

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
        """Answered from memory (the bus sends :meth:`status_body` directly)."""
        return self._build_status()

    def status_body(self) -> bytes:
        """GetStatus's reply body, marshalled; rebuilt when something changed or after 1 s
        (days left and expiry follow the clock)."""
        now = time.monotonic()
        if self._status is None or now - self._status[0] > STATUS_MAX_AGE:
            self._status = (now, marshall_body("a{sv}", [self._build_status()]))
        return self._status[1]

    def _build_status(self) -> dict[str, Variant]:
        live = self.manager.current() or self.manager.reading()
        record, _source = self.manager.shown_record()
        token = live.snapshot.token.kind.value if live and live.snapshot else ""
        if not token and record is not None:
            token = record.token
        now = self.manager.clock()
        return {
            "state": Variant("s", self.manager.state()),
            "readers": Variant("as", list(self.manager.readers)),
            "reader": Variant("s", live.reader if live else ""),
            "token": Variant("s", token),
            "unsupported_readers": Variant("as", self.manager.unsupported_readers()),
            "card_id": Variant("s", record.card_id if record else ""),
            "cards": Variant("aa{sv}", [_card_to_dbus(r) for r in self._known_cards()]),
            "auth": Variant("a{sv}", _view_to_dbus(self.manager.certificate_view("auth"), now)),
            "sign": Variant("a{sv}", _view_to_dbus(self.manager.certificate_view("sign"), now)),
        }

    def _known_cards(self) -> list[CardRecord]:
        return sorted(self.manager.known.values(), key=lambda r: r.last_seen, reverse=True)

    @method()
    async def GetCertificate(self, which: "s") -> "ay":
        if which not in ("auth", "auth-ca", "sign-ca"):
            raise errors.InvalidArgument(
                "which must be auth, auth-ca or sign-ca (the signing certificate comes with Sign)",
            )
        return self.manager.certificate(which)

    @method()
    async def Sign(self, data: "ay", hash: "s", options: "a{sv}") -> "ayay":
        _check_options(options, self.SIGN_OPTIONS)
        return await self._sign(SIGN_KEY, data, hash, options)

    @method()
    async def Authenticate(self, challenge: "ay", options: "a{sv}") -> "ayay":
        _check_options(options, self.AUTHENTICATE_OPTIONS)
        hash_name = _option(options, "hash", "s", "sha256")
        return await self._sign(AUTH_KEY, challenge, hash_name, options)

    @method()
    async def ForgetCard(self, card_id: "s", options: "a{sv}") -> "a{sv}":
        """Remove a card the user no longer has from the cache, with its reminders."""
        _check_options(options, {})
        log.info("ForgetCard requested by %s", await self._caller())
        record = await self.manager.forget(card_id)
        return {"card_id": Variant("s", record.card_id)}

    @method()
    async def CheckPersonalData(self, options: "a{sv}") -> "a{sv}":
        """Compare the card's basic four information with the signing certificate."""
        _check_options(
            options, {"pin": "s", "sign-pin": "s", "interactive": "b", "allow-last-try": "b"}
        )
        # Shapes first: nothing reaches the card when either PIN is malformed.
        card_info_pin = _pin_option(options, "pin", CARD_INFO_PIN)
        try:
            sign_pin = _pin_option(options, "sign-pin", SIGN_PASSWORD)
        except card_errors.PinFormatError:
            wipe(card_info_pin or bytearray())
            raise
        caller = await self._caller()
        log.info("CheckPersonalData requested by %s", caller)
        card_info = self._request(
            options, CARD_INFO_PIN, card_info_pin, caller,
            _("compare your card's personal data with the signing certificate"),
        )  # fmt: skip
        sign = self._request(
            options, SIGN_PASSWORD, sign_pin, caller,
            _("read the signing certificate to compare it with your card"),
        )  # fmt: skip
        try:
            changed = await self.manager.check_personal_data(card_info, sign)
        finally:
            for buffer in (card_info_pin, sign_pin):
                if buffer is not None:
                    wipe(buffer)
        return {
            "matches": Variant("b", not changed),
            "changed": Variant("as", changed),
            "state": Variant("s", self.manager.certificate_view("sign").state()),
        }

    @method()
    async def ChangePin(self, which: "s", options: "a{sv}") -> None:
        """Change a PIN of the card: the current PIN through the gate, then the new one."""
        policy = PINS.get(which)
        if policy is None:
            raise errors.InvalidArgument("which must be auth, sign or card-info")
        _check_options(options, self.CHANGE_PIN_OPTIONS)
        if ("pin" in options) != ("new-pin" in options):
            raise errors.InvalidArgument(
                "give both pin and new-pin, or neither (the daemon then asks the user)"
            )
        # Shapes first: nothing reaches the card when either PIN is malformed.
        pin = _pin_option(options, "pin", policy)
        try:
            new_pin = _pin_option(options, "new-pin", policy)
        except card_errors.PinFormatError as exc:
            wipe(pin or bytearray())
            raise card_errors.PinFormatError(f"the new {exc}") from None
        try:
            if pin is not None and pin == new_pin:
                raise errors.PinFormat(
                    f"the new {policy.label_en} is the same as the current one; nothing was "
                    "sent to the card (新しいものが現在のものと同じです)"
                )
            caller = await self._caller()
            log.info("ChangePin %s requested by %s", which, caller)
            request = self._request(options, policy, pin, caller, _change_purpose(policy))
            request.changes_pin = True
            request.new_pin = new_pin
            try:
                await self.manager.change_pin(request)
            except PinChangeUnconfirmedError as exc:
                cause = to_api_error(exc.__cause__ or exc)
                raise type(cause)(f"{cause.text}; {pin_unconfirmed_text(policy)}") from None
            except card_errors.CardTimeoutError:
                # The change may have reached the card while the caller gave up waiting.
                raise errors.Failed(
                    f"the card did not answer in time; {pin_unconfirmed_text(policy)}"
                ) from None
            except (errors.MncdError, card_errors.CardError, LastTryError,
                    PromptCancelledError, PromptUnavailableError, CardChangedError,
                    CertificateError) as exc:  # fmt: skip
                error = to_api_error(exc)
                raise type(error)(f"{error.text}; {pin_unchanged_text(policy)}") from None
        finally:
            for buffer in (pin, new_pin):
                if buffer is not None:
                    wipe(buffer)

    @method()
    async def GetPinStatus(self, options: "a{sv}") -> "a{sv}":
        """Tries left on every PIN of the card, read live without spending one."""
        _check_options(options, {})
        tries = await self.manager.pin_status()
        live = self.manager.current()
        status: dict[str, Variant] = {"reader": Variant("s", live.reader if live else "")}
        for name, policy in PINS.items():
            status[name] = Variant(
                "a{sv}",
                {
                    "present": Variant("b", name in tries),
                    "tries_left": Variant("i", tries.get(name, -1)),
                    "max_tries": Variant("i", policy.max_tries),
                },
            )
        return status

    @method()
    async def GetSigningCertificate(self, options: "a{sv}") -> "ay":
        """The signing certificate (personal data): read from the card after the signing
        password, every time."""
        _check_options(options, {"pin": "s", "interactive": "b", "allow-last-try": "b"})
        pin = _pin_option(options, "pin", SIGN_PASSWORD)
        try:
            caller = await self._caller()
            log.info("GetSigningCertificate requested by %s", caller)
            request = self._request(
                options, SIGN_PASSWORD, pin, caller,
                _("show your signing certificate, with your name, address, birth date and sex"),
            )  # fmt: skip
            return await self.manager.read_signing_certificate(request)
        finally:
            if pin is not None:
                wipe(pin)

    async def _sign(
        self, key: KeySlot, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> list[bytes]:
        if hash_name not in HASHES:
            raise errors.InvalidArgument(f"hash must be one of {', '.join(HASHES)}")
        source = _option(options, "digest-from", "o", None)
        if source is not None:
            return await self._sign_from_source(source, data, hash_name, options)
        if not data:
            raise errors.InvalidArgument("nothing to sign")
        if len(data) > MAX_DATA:
            raise errors.InvalidArgument(
                f"data is larger than {MAX_DATA} bytes; hash it and pass digest=true",
            )
        if _option(options, "digest", "b", False):
            if len(data) != digest_size(hash_name):
                raise errors.InvalidArgument(
                    f"a {hash_name} digest is {digest_size(hash_name)} bytes"
                )
            digest_value = bytes(data)
        else:
            digest_value = digest(hash_name, bytes(data))
        pin = _pin_option(options, "pin", key.pin)  # its shape, before the card
        try:
            caller = await self._caller()
            log.info("%s requested by %s", "Sign" if key is SIGN_KEY else "Authenticate", caller)
            purpose = _("sign a document") if key is SIGN_KEY else _("prove who you are (log in)")
            request = self._request(options, key.pin, pin, caller, purpose)
            result = await self.manager.sign(key, hash_name, digest_value, request)
        finally:
            if pin is not None:
                wipe(pin)
        return [result.signature, result.certificate]

    async def _sign_from_source(
        self, source: str, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> list[bytes]:
        """Sign with ``digest-from``: the caller's ``source`` object gives the digest once the
        signing certificate is known (a document that names its signer), in the same VERIFY."""
        if data:
            raise errors.InvalidArgument("data must be empty with digest-from")
        if "digest" in options:
            raise errors.InvalidArgument("digest and digest-from cannot be combined")
        sender = current_call().sender
        if not sender or self.bus is None:
            raise errors.InvalidArgument("digest-from needs a caller on the bus")
        pin = _pin_option(options, "pin", SIGN_KEY.pin)  # its shape, before the card
        try:
            caller = await self._caller()
            log.info("Sign (digest from the caller) requested by %s", caller)
            request = self._request(options, SIGN_KEY.pin, pin, caller, _("sign a document"))
            bus = self.bus

            async def digest_for(certificate: bytes) -> bytes:
                try:
                    reply = await call(
                        bus, sender, source, DIGEST_INTERFACE, "Digest", "ays",
                        [certificate, hash_name], timeout=DIGEST_TIMEOUT,
                    )  # fmt: skip
                except CallError as exc:
                    raise DigestUnavailableError(
                        exc.text or "the caller did not give the digest to sign"
                    ) from None
                body = reply.body
                if reply.signature != "ay" or len(body[0]) != digest_size(hash_name):
                    raise DigestUnavailableError(f"the caller's answer is not a {hash_name} digest")
                return bytes(body[0])

            result = await self.manager.sign(SIGN_KEY, hash_name, b"", request, digest_for)
        finally:
            if pin is not None:
                wipe(pin)
        return [result.signature, result.certificate]

    def _request(
        self,
        options: dict[str, Variant],
        policy: PinPolicy,
        pin: bytearray | None,
        caller: "Caller",
        purpose: str,
    ) -> PinRequest:
        """A PIN request for the gate from the call's options."""
        # A caller that also sets D-Bus's ALLOW_INTERACTIVE_AUTHORIZATION flag is logged as
        # expecting a prompt; interactive=false forbids one.
        if pin is None and current_call().allow_interaction:
            log.debug("caller allows interactive authorization")
        return PinRequest(
            policy=policy,
            purpose=purpose,
            caller=caller,
            sender=current_call().sender,
            pin=pin,
            allow_last_try=_option(options, "allow-last-try", "b", False),
            interactive=_option(options, "interactive", "b", True),
        )

    async def _caller(self) -> "Caller":
        # Callers are looked up (from /proc) by the first call that needs to know who asks:
        # the daemon is ready without that module.
        from mncd.daemon.callers import Caller, identify

        sender = current_call().sender
        if not sender or self.bus is None:
            return Caller(0)
        if sender in self._callers:  # unique names are never reused on a bus
            return self._callers[sender]
        caller = await identify(self.bus, sender)
        if len(self._callers) >= CALLER_CACHE_SIZE:
            self._callers.pop(next(iter(self._callers)))
        self._callers[sender] = caller
        return caller


def _change_purpose(policy: PinPolicy) -> str:
    """What the PIN dialog says a PIN change is for."""
    return {
        "auth": _("change your user-authentication PIN"),
        "sign": _("change your signing password"),
        "card-info": _("change your card-info PIN"),
    }[policy.name]


def _pin_option(options: dict[str, Variant], name: str, policy: PinPolicy) -> bytearray | None:
    """The PIN given in option ``name``, its shape checked; None when not given."""
    text = _option(options, name, "s", None)
    return policy.check(text) if text is not None else None


def _check_options(options: dict[str, Variant], known: dict[str, str]) -> None:
    for name in options:
        if name not in known:
            raise errors.InvalidArgument(f"unknown option {name!r}")
        _option(options, name, known[name], None)
