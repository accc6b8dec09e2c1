"""The D-Bus interface ``io.github.mncd.MyNumberCard1``: validates, delegates, maps errors.

Only the errors of :mod:`mncd.errors` reach callers, with short texts; no traceback, path or
PIN ever does. Every exception from the layers below becomes one of them through
:data:`~mncd.dbus.errors.ERROR_TABLE`.
"""

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from dbus_next import DBusError, PropertyAccess, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import dbus_property, method, signal

from mncd import errors
from mncd.api import INTERFACE, MAX_DATA, MAX_SERVICE_DIGESTS, MAX_SITE
from mncd.card import errors as card_errors
from mncd.card.digestinfo import HASHES, digest, digest_size, parse_digest_info
from mncd.card.jpki import AUTH_KEY, SIGN_KEY, KeySlot
from mncd.card.pin import AUTH_PIN, CARD_INFO_PIN, SIGN_PASSWORD, PinPolicy, wipe
from mncd.core.cache import CardRecord
from mncd.core.errors import (
    LastTryError,
    PinChangeUnconfirmedError,
    PromptCancelledError,
    PromptUnavailableError,
)
from mncd.core.manager import CardManager
from mncd.core.model import CertificateView
from mncd.core.pingate import CardChangedError, PinRequest
from mncd.dbus.bus import ExportedInterface, current_call, marshall_body
from mncd.dbus.errors import (
    pin_unchanged_text,
    pin_unconfirmed_text,
    to_api_error,
    to_dbus_error,
)
from mncd.dbus.options import check_options, option, pin_option
from mncd.i18n import translator
from mncd.jpki.errors import CertificateError

if TYPE_CHECKING:
    from mncd.core.callers import Caller, CallerProcess

log = logging.getLogger(__name__)
T = TypeVar("T")


def _(text: str) -> str:
    return translator().gettext(text)


#: GetStatus reuses its answer this long when nothing changed (days left follow the clock).
STATUS_MAX_AGE = 1.0
CALLER_CACHE_SIZE = 256

#: The PINs ChangePin and GetPinStatus know, by the name callers use.
PINS: dict[str, PinPolicy] = {
    policy.name: policy for policy in (AUTH_PIN, SIGN_PASSWORD, CARD_INFO_PIN)
}


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

    #: Options of SignDigestInfo and ReadCardInfo.
    SERVICE_OPTIONS: ClassVar[dict[str, str]] = {
        "pin": "s",
        "interactive": "b",
        "allow-last-try": "b",
        "site": "s",
        "combination-code": "b",
    }

    def __init__(self, manager: CardManager, bus: MessageBus | None = None) -> None:
        super().__init__(INTERFACE)
        self.manager = manager
        self.bus = bus
        self._status: tuple[float, bytes] | None = None
        #: The process behind each recent sender, least recently calling first.
        self._callers: dict[str, "CallerProcess"] = {}
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

    # -- change notification (called by the daemon's wiring when the core says so) ---------

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
        check_options(options, self.SIGN_OPTIONS)
        return await self._sign(SIGN_KEY, data, hash, options)

    @method()
    async def Authenticate(self, challenge: "ay", options: "a{sv}") -> "ayay":
        check_options(options, self.AUTHENTICATE_OPTIONS)
        hash_name = option(options, "hash", "s", "sha256")
        return await self._sign(AUTH_KEY, challenge, hash_name, options)

    @method()
    async def ForgetCard(self, card_id: "s", options: "a{sv}") -> "a{sv}":
        """Remove a card the user no longer has from the cache, with its reminders."""
        check_options(options, {})
        log.info("ForgetCard requested by %s", await self._caller())
        record = await self.manager.forget(card_id)
        return {"card_id": Variant("s", record.card_id)}

    @method()
    async def CheckPersonalData(self, options: "a{sv}") -> "a{sv}":
        """Compare the card's basic four information with the signing certificate."""
        check_options(
            options, {"pin": "s", "sign-pin": "s", "interactive": "b", "allow-last-try": "b"}
        )
        # Shapes first: nothing reaches the card when either PIN is malformed.
        card_info_pin = pin_option(options, "pin", CARD_INFO_PIN)
        try:
            sign_pin = pin_option(options, "sign-pin", SIGN_PASSWORD)
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
        check_options(options, self.CHANGE_PIN_OPTIONS)
        if ("pin" in options) != ("new-pin" in options):
            raise errors.InvalidArgument(
                "give both pin and new-pin, or neither (the daemon then asks the user)"
            )
        # Shapes first: nothing reaches the card when either PIN is malformed.
        pin = pin_option(options, "pin", policy)
        try:
            new_pin = pin_option(options, "new-pin", policy)
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
        check_options(options, {})
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
        check_options(options, {"pin": "s", "interactive": "b", "allow-last-try": "b"})
        pin = pin_option(options, "pin", SIGN_PASSWORD)
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

    @method()
    async def SignDigestInfo(self, which: "s", digest_infos: "aay", options: "a{sv}") -> "a{sv}":
        """Sign DER DigestInfos as they are with one key under one PIN (one VERIFY), for a
        service such as a government site; each signature verified."""
        key = {"auth": AUTH_KEY, "sign": SIGN_KEY}.get(which)
        if key is None:
            raise errors.InvalidArgument("which must be auth or sign")
        check_options(options, self.SERVICE_OPTIONS)
        if not 0 < len(digest_infos) <= MAX_SERVICE_DIGESTS:
            raise errors.InvalidArgument(f"give 1 to {MAX_SERVICE_DIGESTS} DigestInfos")
        try:
            digests = [parse_digest_info(bytes(item)) for item in digest_infos]
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        site = _site_option(options)
        pin = pin_option(options, "pin", key.pin)  # its shape, before the card
        try:
            caller = await self._caller()
            log.info("SignDigestInfo %s (%d) requested by %s", which, len(digests), caller)
            if key is AUTH_KEY:
                purpose = _("log in to {site}") if site else _("prove who you are (log in)")
            else:
                purpose = _("sign for {site}") if site else _("sign a document")
            request = self._request(options, key.pin, pin, caller, _for_site(purpose, site, caller))
            answer = await self.manager.sign_for_service(
                key, digests, request, option(options, "combination-code", "b", False)
            )
        finally:
            if pin is not None:
                wipe(pin)
        return {
            "signatures": Variant("aay", answer.signatures),
            "certificate": Variant("ay", answer.certificate),
            **_combination(answer.installation_id, answer.combination_code),
        }

    @method()
    async def ReadCardInfo(self, options: "a{sv}") -> "a{sv}":
        """The card's name, address, birth date and sex (card-info PIN), for this caller only."""
        check_options(options, self.SERVICE_OPTIONS)
        site = _site_option(options)
        pin = pin_option(options, "pin", CARD_INFO_PIN)
        try:
            caller = await self._caller()
            log.info("ReadCardInfo requested by %s", caller)
            purpose = (
                _("give your name, address, birth date and sex to {site}")
                if site
                else _("read your name, address, birth date and sex")
            )
            request = self._request(
                options, CARD_INFO_PIN, pin, caller, _for_site(purpose, site, caller)
            )
            answer = await self.manager.read_card_info(
                request, option(options, "combination-code", "b", False)
            )
        finally:
            if pin is not None:
                wipe(pin)
        info = answer.info
        return {
            "name": Variant("s", info.name),
            "address": Variant("s", info.address),
            "birth-date": Variant("s", info.birth_date.strftime("%Y%m%d")),
            "sex": Variant("s", info.sex),
            **_combination(answer.installation_id, answer.combination_code),
        }

    async def _sign(
        self, key: KeySlot, data: bytes, hash_name: str, options: dict[str, Variant]
    ) -> list[bytes]:
        if hash_name not in HASHES:
            raise errors.InvalidArgument(f"hash must be one of {', '.join(HASHES)}")
        source = option(options, "digest-from", "o", None)
        if source is not None:
            return await self._sign_from_source(source, data, hash_name, options)
        if not data:
            raise errors.InvalidArgument("nothing to sign")
        if len(data) > MAX_DATA:
            raise errors.InvalidArgument(
                f"data is larger than {MAX_DATA} bytes; hash it and pass digest=true",
            )
        if option(options, "digest", "b", False):
            if len(data) != digest_size(hash_name):
                raise errors.InvalidArgument(
                    f"a {hash_name} digest is {digest_size(hash_name)} bytes"
                )
            digest_value = bytes(data)
        else:
            digest_value = digest(hash_name, bytes(data))
        pin = pin_option(options, "pin", key.pin)  # its shape, before the card
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
        pin = pin_option(options, "pin", SIGN_KEY.pin)  # its shape, before the card
        try:
            caller = await self._caller()
            log.info("Sign (digest from the caller) requested by %s", caller)
            request = self._request(options, SIGN_KEY.pin, pin, caller, _("sign a document"))
            from mncd.dbus.digest_source import digest_from  # digest-from only: loaded on use

            digest_for = digest_from(self.bus, sender, source, hash_name)
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
            allow_last_try=option(options, "allow-last-try", "b", False),
            interactive=option(options, "interactive", "b", True),
        )

    async def _caller(self) -> "Caller":
        """Who sent the call, read from /proc now: a process that has exec'd another program
        since its last call is named by the new one (the bus is asked once per sender)."""
        # Callers are looked up (from /proc) by the first call that needs to know who asks:
        # the daemon is ready without that module.
        from mncd.core.callers import Caller
        from mncd.dbus.callers import lookup

        sender = current_call().sender
        if not sender or self.bus is None:
            return Caller(0)
        process = self._callers.pop(sender, None)  # unique names are never reused on a bus
        if process is None:
            process = await lookup(self.bus, sender)
            earlier = self._callers.pop(sender, None)  # looked up meanwhile by another call
            if earlier is not None:
                process.close()
                process = earlier
        self._callers[sender] = process
        while len(self._callers) > CALLER_CACHE_SIZE:
            self._callers.pop(next(iter(self._callers))).close()
        return process.read()


#: What a ``site`` option may be: an https origin (scheme, host, optional port).
_SITE = re.compile(r"https://[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?")


def _site_option(options: dict[str, Variant]) -> str:
    """The ``site`` option (the origin the caller acts for, as its browser reports it)."""
    site = option(options, "site", "s", "")
    if site and (len(site) > MAX_SITE or not _SITE.fullmatch(site)):
        raise errors.InvalidArgument("site must be an https origin such as https://example.jp")
    return site


def _for_site(purpose: str, site: str, caller: "Caller") -> str:
    """``purpose`` naming the site and the browser that reports it: the program that started
    the caller, as the kernel names it (the caller's own claim is only the site)."""
    if not site:
        return purpose
    from mncd.core.callers import parent_executable, shorten

    browser = parent_executable(caller.pid) or _("an unknown program")
    return _("{purpose} (the site as {browser} reports it)").format(
        purpose=purpose.format(site=site), browser=shorten(browser)
    )


def _combination(installation: str, code: str) -> dict[str, Variant]:
    """The installation id and combination code of an answer, when they were asked for."""
    if not installation:
        return {}
    return {
        "installation-id": Variant("s", installation),
        "combination-code": Variant("s", code),
    }


def _change_purpose(policy: PinPolicy) -> str:
    """What the PIN dialog says a PIN change is for."""
    return {
        "auth": _("change your user-authentication PIN"),
        "sign": _("change your signing password"),
        "card-info": _("change your card-info PIN"),
    }[policy.name]
