"""PKCS#11 for one connected application: its sessions, logins and operations.

One instance per connection (one ``p11-kit-client.so`` loaded in one process). Every handler
reads all its arguments before it acts, so a malformed request changes nothing. Card work goes
through the manager and its PIN gate:

- C_Login verifies the PIN as a card operation of its own (ending in a card reset). A NULL PIN
  (the token has a protected authentication path) makes the daemon ask in its own dialog, naming
  this process. For the authentication token the PIN is then held in memory for this login only,
  until C_Logout, the close of the last session on the token, the card's removal, C_Finalize,
  the disconnection, :data:`~mncd.pkcs11.sessions.LOGIN_TIMEOUT` or a PIN event that makes it
  worthless (see :mod:`mncd.pkcs11.sessions`), whichever comes first; for the signing token it
  is wiped at once.
- Each C_Sign (or C_SignFinal) is one gated card operation: SELECT, the live counter, VERIFY,
  SIGN, card reset. The signing key needs a PIN for every signature: the one given to
  C_Login(CKU_CONTEXT_SPECIFIC), else the daemon asks.
- With one try left, a PIN given by the application is sent only after the user confirms it in
  the daemon's dialog.
- A SHA-1 signature (the authentication key only) is logged as legacy, naming the application.
- The tokens have no random number generator (CKR_RANDOM_NO_RNG).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from mncd import __version__
from mncd.card.digestinfo import LEGACY_HASHES
from mncd.card.errors import PinFormatError
from mncd.card.jpki import AUTH_KEY, SIGN_KEY
from mncd.card.pin import PinPolicy, wipe
from mncd.core.callers import Caller
from mncd.core.events import PinEvent
from mncd.core.pingate import PinRequest
from mncd.i18n import translator
from mncd.pkcs11 import wire
from mncd.pkcs11.constants import (
    CKA,
    CKF_DONT_BLOCK,
    CKF_HW_SLOT,
    CKF_REMOVABLE_DEVICE,
    CKF_RW_SESSION,
    CKF_SERIAL_SESSION,
    CKF_TOKEN_PRESENT,
    CKO,
    CKR,
    CKS,
    CKU,
    CRYPTOKI_VERSION,
    EFFECTIVELY_INFINITE,
    UNAVAILABLE,
)
from mncd.pkcs11.context import ModuleContext
from mncd.pkcs11.errors import Pkcs11Error
from mncd.pkcs11.mechanisms import RSA_PSS_MECHANISMS, InputError, Signing
from mncd.pkcs11.sessions import Login, Logins, Session, SignOperation
from mncd.pkcs11.tokens import Slot, TokenObject, slot_of_handle
from mncd.pkcs11.wire import Attribute, AttributeAnswer, Reader, ValueKind, Writer, value_kind

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Most sessions one application may have open.
MAX_SESSIONS = 64
#: Calls that would change a token: the card's tokens are read-only.
WRITE_CALLS = frozenset(
    {"C_InitToken", "C_InitToken2", "C_InitPIN", "C_SetPIN", "C_CreateObject", "C_CopyObject",
     "C_DestroyObject", "C_SetAttributeValue", "C_GenerateKey", "C_GenerateKeyPair",
     "C_UnwrapKey", "C_DeriveKey", "C_DeriveKey2"}
)  # fmt: skip
#: Calls of a random number generator: the tokens have none.
RANDOM_CALLS = frozenset({"C_SeedRandom", "C_GenerateRandom"})


def _(text: str) -> str:
    return translator().gettext(text)


@dataclass
class _Events:
    slots: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Pkcs11Module:
    """The PKCS#11 calls of one application, over the daemon's manager."""

    def __init__(self, context: ModuleContext, caller: Caller) -> None:
        self.context = context
        self.caller = caller
        self.initialized = False
        self.sessions: dict[int, Session] = {}
        self.logins = Logins(context, caller, self._login_ended)
        self._next_session = 1
        self._events = _Events()
        self._told_no_pss: set[int] = set()

    # -- dispatch --------------------------------------------------------------------------

    def handler(self, call: wire.Call) -> Callable[[Reader], Writer | Awaitable[Writer]]:
        """The method answering ``call``: its own, or one refusing it."""
        if call.name != "C_Initialize" and not self.initialized:
            return _refuse(CKR.CRYPTOKI_NOT_INITIALIZED)
        method = getattr(self, call.name, None)
        if method is not None:
            return method
        if call.name in WRITE_CALLS:
            return _refuse(CKR.TOKEN_WRITE_PROTECTED)
        if call.name in RANDOM_CALLS:
            return _refuse(CKR.RANDOM_NO_RNG)
        return _refuse(CKR.FUNCTION_NOT_SUPPORTED)

    def close(self) -> None:
        """The application is gone (or finalized): every PIN wiped, every session closed."""
        self.logins.end_all()
        for session in self.sessions.values():
            session.end()
        self.sessions.clear()
        self.initialized = False
        self._events.slots.clear()
        self._events.changed.set()

    def refresh(self, changed_slots: set[int]) -> None:
        """The readers or cards changed: end what belonged to a card that is gone."""
        if not self.initialized:
            return
        current = {slot.id: slot.card for slot in self.context.slots.slots()}
        for handle, session in list(self.sessions.items()):
            if current.get(session.slot_id) != session.card:
                session.end()
                del self.sessions[handle]
        self.logins.cards_changed(current)
        changed_slots = {s for s in changed_slots if self.context.slots.shows(s)}
        if changed_slots:
            self._events.slots |= changed_slots
            self._events.changed.set()

    # -- helpers ---------------------------------------------------------------------------

    def _slot(self, slot_id: int) -> Slot:
        slot = self.context.slots.slot(slot_id)
        if slot is None:
            raise Pkcs11Error(CKR.SLOT_ID_INVALID)
        return slot

    def _token(self, slot_id: int) -> Slot:
        slot = self._slot(slot_id)
        if not slot.present:
            raise Pkcs11Error(CKR.TOKEN_NOT_PRESENT)
        return slot

    def _session(self, handle: int) -> tuple[Session, Slot]:
        session = self.sessions.get(handle)
        if session is None:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID)
        slot = self.context.slots.slot(session.slot_id)
        if slot is None or slot.card != session.card:
            self.refresh(set())
            raise Pkcs11Error(CKR.DEVICE_REMOVED)
        return session, slot

    def _logged_in(self, slot: Slot) -> bool:
        return self.logins.get(slot) is not None

    def heard(self, event: PinEvent) -> None:
        """A PIN event from any front door (see :class:`~mncd.pkcs11.sessions.Logins`)."""
        self.logins.heard(event)

    def _login_ended(self, slot_id: int) -> None:
        """A login ended: the signatures its sessions had begun end with it."""
        for session in self.sessions.values():
            if session.slot_id == slot_id and session.signing is not None:
                session.signing.end()
                session.signing = None

    def _start(self, session: Session) -> None:
        if session.busy:
            raise Pkcs11Error(CKR.OPERATION_ACTIVE, "a call of this session is still running")
        session.busy = True

    def _request(self, policy: PinPolicy, purpose: str, pin: bytearray | None) -> PinRequest:
        return PinRequest(policy, purpose, self.caller, pin=pin, interactive=True)

    # -- general ---------------------------------------------------------------------------

    def C_Initialize(self, r: Reader) -> Writer:
        handshake = r.ay()
        r.y()  # whether reserved data follows
        r.ay()  # pReserved, ignored
        r.end()
        if handshake != wire.HANDSHAKE:
            raise Pkcs11Error(CKR.ARGUMENTS_BAD, "wrong handshake")
        if self.initialized:
            raise Pkcs11Error(CKR.CRYPTOKI_ALREADY_INITIALIZED)
        self.initialized = True
        self._events = _Events()
        return Writer(r.call)

    def C_Finalize(self, r: Reader) -> Writer:
        r.end()
        self.close()
        return Writer(r.call)

    def C_GetInfo(self, r: Reader) -> Writer:
        r.end()
        major, minor = (int(p) for p in __version__.split(".")[:2])
        return (
            Writer(r.call).v(*CRYPTOKI_VERSION).s("mncd", 32).u(0)
            .s("My Number Card (mncd daemon)", 32).v(major, minor)
        )  # fmt: skip

    def C_GetSlotList(self, r: Reader) -> Writer:
        present_only = r.y()
        room = r.fu()
        r.end()
        ids = [s.id for s in self.context.slots.slots() if s.present or not present_only]
        return _ulongs(Writer(r.call), ids, room)

    def C_GetSlotInfo(self, r: Reader) -> Writer:
        slot_id = r.u()
        r.end()
        slot = self._slot(slot_id)
        flags = CKF_REMOVABLE_DEVICE | CKF_HW_SLOT | (CKF_TOKEN_PRESENT if slot.present else 0)
        return Writer(r.call).s(slot.description, 64).s("mncd", 32).u(flags).v(0, 0).v(0, 0)

    def C_GetTokenInfo(self, r: Reader) -> Writer:
        slot_id = r.u()
        r.end()
        slot = self._token(slot_id)
        mine = [s for s in self.sessions.values() if s.slot_id == slot.id]
        policy = slot.spec.key.pin
        w = Writer(r.call).s(slot.spec.label, 32).s("JPKI", 32).s("My Number Card", 16)
        w.s(slot.serial(), 16).u(slot.token_flags())
        w.u(EFFECTIVELY_INFINITE).u(len(mine)).u(EFFECTIVELY_INFINITE)
        w.u(sum(s.rw for s in mine)).u(policy.max_length).u(policy.min_length)
        for _ in range(4):  # public and private memory: not applicable
            w.u(UNAVAILABLE)
        return w.v(0, 0).v(0, 0).s("", 16)

    def C_GetMechanismList(self, r: Reader) -> Writer:
        slot_id = r.u()
        room = r.fu()
        r.end()
        key = self._token(slot_id).key_info()
        types = sorted(key.mechanisms) if key else []
        if key is not None and key.rsa and slot_id not in self._told_no_pss:
            self._told_no_pss.add(slot_id)
            log.info(
                "PKCS#11: %s reads the mechanisms of the card's RSA key: no RSA-PSS (the card "
                "pads with PKCS#1 v1.5 itself), so it cannot log in over TLS 1.3; over TLS 1.2 "
                "it can",
                self.caller,
            )
        return _ulongs(Writer(r.call), types, room)

    def C_GetMechanismInfo(self, r: Reader) -> Writer:
        slot_id = r.u()
        mechanism = r.u()
        r.end()
        key = self._token(slot_id).key_info()
        info = key.mechanism_info(mechanism) if key else None
        if info is None:
            self._unsupported(mechanism)
            raise Pkcs11Error(CKR.MECHANISM_INVALID)
        return Writer(r.call).u(info[0]).u(info[1]).u(info[2])

    def C_WaitForSlotEvent(self, r: Reader) -> Writer | Awaitable[Writer]:
        flags = r.u()
        r.end()
        if self._events.slots:
            return Writer(r.call).u(self._pop_event())
        if flags & CKF_DONT_BLOCK:
            raise Pkcs11Error(CKR.NO_EVENT)
        return self._wait_for_event(r.call)

    async def _wait_for_event(self, call: wire.Call) -> Writer:
        events = self._events
        while not events.slots:
            events.changed.clear()
            await events.changed.wait()
            if not self.initialized or events is not self._events:
                raise Pkcs11Error(CKR.CRYPTOKI_NOT_INITIALIZED)
        return Writer(call).u(self._pop_event())

    def _pop_event(self) -> int:
        slot_id = min(self._events.slots)
        self._events.slots.discard(slot_id)
        return slot_id

    # -- sessions --------------------------------------------------------------------------

    def C_OpenSession(self, r: Reader) -> Writer:
        slot_id = r.u()
        flags = r.u()
        r.end()
        if not flags & CKF_SERIAL_SESSION:
            raise Pkcs11Error(CKR.SESSION_PARALLEL_NOT_SUPPORTED)
        slot = self._token(slot_id)
        if len(self.sessions) >= MAX_SESSIONS:
            raise Pkcs11Error(CKR.SESSION_COUNT)
        assert slot.card is not None
        handle = self._next_session
        self._next_session += 1
        # Read-write sessions are accepted (OpenSSH opens them); writes are refused.
        self.sessions[handle] = Session(handle, slot.id, slot.card, bool(flags & CKF_RW_SESSION))
        return Writer(r.call).u(handle)

    def C_CloseSession(self, r: Reader) -> Writer:
        handle = r.u()
        r.end()
        session = self.sessions.pop(handle, None)
        if session is None:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID)
        session.end()
        slot = self.context.slots.slot(session.slot_id)
        if slot is not None and slot.login_free:
            pass  # its login is not tied to sessions (browsers close one per signature)
        elif not any(s.slot_id == session.slot_id for s in self.sessions.values()):
            self.logins.end(session.slot_id)  # the last session: the login ends with it
        return Writer(r.call)

    def C_CloseAllSessions(self, r: Reader) -> Writer:
        slot_id = r.u()
        r.end()
        if self.context.slots.slot(slot_id) is None and slot_id not in self.logins:
            raise Pkcs11Error(CKR.SLOT_ID_INVALID)
        for handle, session in list(self.sessions.items()):
            if session.slot_id == slot_id:
                session.end()
                del self.sessions[handle]
        self.logins.end(slot_id)
        return Writer(r.call)

    def C_GetSessionInfo(self, r: Reader) -> Writer:
        handle = r.u()
        r.end()
        session, slot = self._session(handle)
        logged_in = self._logged_in(slot)
        if session.rw:
            state = CKS.RW_USER_FUNCTIONS if logged_in else CKS.RW_PUBLIC_SESSION
        else:
            state = CKS.RO_USER_FUNCTIONS if logged_in else CKS.RO_PUBLIC_SESSION
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if session.rw else 0)
        return Writer(r.call).u(slot.id).u(state).u(flags).u(0)

    # -- login -----------------------------------------------------------------------------

    def C_Login(self, r: Reader) -> Awaitable[Writer]:
        handle = r.u()
        user = r.u()
        given = r.ay()
        r.end()
        session, slot = self._session(handle)
        if user == CKU.CONTEXT_SPECIFIC:
            self._context_login(session, slot, given)
            return _done(Writer(r.call))
        if user == CKU.SO:
            raise Pkcs11Error(CKR.USER_TYPE_INVALID, "the card has no security officer PIN")
        if user != CKU.USER:
            raise Pkcs11Error(CKR.USER_TYPE_INVALID)
        if self._logged_in(slot):
            raise Pkcs11Error(CKR.USER_ALREADY_LOGGED_IN)
        pin = _checked(slot.spec.key.pin, given)
        self._start(session)
        return self._login(r.call, session, slot, pin)

    async def _login(
        self, call: wire.Call, session: Session, slot: Slot, pin: bytearray | None
    ) -> Writer:
        log.info("PKCS#11 C_Login on the %s token by %s", slot.spec.key.name, self.caller)
        try:
            await self._verify_login(slot, pin)
        finally:
            session.busy = False
        return Writer(call)

    async def _verify_login(self, slot: Slot, pin: bytearray | None) -> Login:
        """Verify the PIN (``pin``, else the daemon asks) and start the token's login."""
        key = slot.spec.key
        purpose = (
            _("prove who you are (log in)") if key is AUTH_KEY
            else _("read your signing certificate (it holds your name, address, birth date "
                   "and sex)")
        )  # fmt: skip
        manager = self.context.manager
        try:
            verified = await self.logins.with_last_try(
                self._request(key.pin, purpose, pin),
                slot,
                lambda request: manager.verify_pin(
                    key, request, slot.reader, keep_pin=key is AUTH_KEY
                ),
            )
        finally:
            if pin is not None:
                wipe(pin)
        if verified.card != slot.card or not self.initialized:
            if verified.pin is not None:
                wipe(verified.pin)
            raise Pkcs11Error(CKR.DEVICE_REMOVED)
        login = Login(verified.card, verified.pin, verified.last_try)
        self.logins.start(slot, login)
        return login

    def _context_login(self, session: Session, slot: Slot, given: bytes | None) -> None:
        """The PIN for the next signature (CKA_ALWAYS_AUTHENTICATE); NULL: the daemon asks."""
        operation = session.signing
        if operation is None:
            raise Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED)
        if not self._logged_in(slot):
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN)
        pin = _checked(slot.spec.key.pin, given)
        operation.end()
        operation.pin = pin

    def C_Logout(self, r: Reader) -> Writer:
        handle = r.u()
        r.end()
        _, slot = self._session(handle)
        if slot.id not in self.logins:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN)
        self.logins.end(slot.id)
        return Writer(r.call)

    # -- objects ---------------------------------------------------------------------------

    def _visible(self, slot: Slot) -> list[TokenObject]:
        return slot.objects(self._logged_in(slot))

    def C_FindObjectsInit(self, r: Reader) -> Writer:
        handle = r.u()
        template = r.aA()
        r.end()
        session, slot = self._session(handle)
        if session.found is not None:
            raise Pkcs11Error(CKR.OPERATION_ACTIVE)
        for attribute in template:
            if attribute.value is None:
                raise Pkcs11Error(CKR.ATTRIBUTE_VALUE_INVALID, "template attribute without value")
        session.found = [o.handle for o in self._visible(slot) if _matches(o, template)]
        return Writer(r.call)

    def C_FindObjects(self, r: Reader) -> Writer:
        handle = r.u()
        room = r.fu()
        r.end()
        session, _ = self._session(handle)
        if session.found is None:
            raise Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED)
        count = room or 0
        handles, session.found = session.found[:count], session.found[count:]
        return Writer(r.call).au(handles)

    def C_FindObjectsFinal(self, r: Reader) -> Writer:
        handle = r.u()
        r.end()
        session, _ = self._session(handle)
        if session.found is None:
            raise Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED)
        session.found = None
        return Writer(r.call)

    def C_GetAttributeValue(self, r: Reader) -> Writer:
        handle = r.u()
        object_handle = r.u()
        requests = r.fA()
        r.end()
        _, slot = self._session(handle)
        found = slot.object(object_handle, self._logged_in(slot))
        if found is None:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID)
        rv = CKR.OK
        answers = []
        for request in requests:
            value = found.attributes.get(request.type)
            if request.type in found.sensitive:
                answers.append(AttributeAnswer(request.type, None))
                rv = rv or CKR.ATTRIBUTE_SENSITIVE
            elif value is None:
                answers.append(AttributeAnswer(request.type, None))
                rv = rv or CKR.ATTRIBUTE_TYPE_INVALID
            elif request.size == 0:
                answers.append(AttributeAnswer(request.type, value, size_only=True))
            elif request.size < _length(request.type, value):
                answers.append(AttributeAnswer(request.type, None))
                rv = rv or CKR.BUFFER_TOO_SMALL
            else:
                answers.append(AttributeAnswer(request.type, value))
        return Writer(r.call).aA(answers).u(rv)

    # -- signing ---------------------------------------------------------------------------

    def C_SignInit(self, r: Reader) -> Writer:
        handle = r.u()
        mechanism = r.M(tail=8)
        key_handle = r.u()
        r.end()
        session, slot = self._session(handle)
        if mechanism.type is None:  # a NULL mechanism cancels the operation
            if session.signing is not None:
                session.signing.end()
                session.signing = None
            return Writer(r.call)
        if session.signing is not None:
            raise Pkcs11Error(CKR.OPERATION_ACTIVE)
        key = self._private_key(slot, key_handle)
        info = slot.key_info()
        if info is None or mechanism.type not in info.mechanisms:
            self._unsupported(mechanism.type)
            raise Pkcs11Error(CKR.MECHANISM_INVALID)
        if mechanism.parameter is not None:
            raise Pkcs11Error(CKR.MECHANISM_PARAM_INVALID)
        assert key.attributes[CKA.CLASS] == CKO.PRIVATE_KEY
        session.signing = SignOperation(slot.spec, Signing(mechanism.type, info))
        return Writer(r.call)

    def _unsupported(self, mechanism: int) -> None:
        """Say why an application asking for RSA-PSS gets no signature (nothing is asked)."""
        if mechanism in RSA_PSS_MECHANISMS:
            log.info(
                "PKCS#11: %s asked for RSA-PSS, which the card cannot make (it pads with "
                "PKCS#1 v1.5 itself): answered as unsupported, no PIN asked. TLS 1.3 log-ins "
                "need RSA-PSS; the server must allow TLS 1.2 for client certificates",
                self.caller,
            )

    def _private_key(self, slot: Slot, handle: int) -> TokenObject:
        if slot_of_handle(handle) != slot.id:
            raise Pkcs11Error(CKR.KEY_HANDLE_INVALID)
        found = slot.object(handle, self._logged_in(slot))
        if found is None:
            if slot.object(handle, logged_in=True) is not None:
                raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN)
            raise Pkcs11Error(CKR.KEY_HANDLE_INVALID)
        if found.attributes.get(CKA.CLASS) != CKO.PRIVATE_KEY:
            raise Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED)
        return found

    def C_Sign(self, r: Reader) -> Writer | Awaitable[Writer]:
        handle = r.u()
        data = r.ay()
        room = r.fy()
        r.end()
        session, slot = self._session(handle)
        operation = self._signing(session)
        if operation.signing.updated:
            self._end_signing(session)
            raise Pkcs11Error(CKR.OPERATION_ACTIVE, "C_Sign after C_SignUpdate")
        if data is None:
            self._end_signing(session)
            raise Pkcs11Error(CKR.ARGUMENTS_BAD, "no data")
        length = operation.signing.key.signature_length
        if room is None or room < length:  # "how big?" or too small: the operation goes on
            return Writer(r.call).ay(None, length)
        try:
            operation.signing.update(data)
        except InputError as exc:
            self._end_signing(session)
            raise Pkcs11Error(CKR.DATA_LEN_RANGE if exc.length else CKR.DATA_INVALID) from exc
        self._start(session)
        return self._sign(r.call, session, slot, operation)

    def C_SignUpdate(self, r: Reader) -> Writer:
        handle = r.u()
        data = r.ay()
        r.end()
        session, _ = self._session(handle)
        operation = self._signing(session)
        try:
            if data is None:
                raise InputError("no data")
            operation.signing.update(data)
        except InputError as exc:
            self._end_signing(session)
            raise Pkcs11Error(CKR.DATA_LEN_RANGE if exc.length else CKR.ARGUMENTS_BAD) from exc
        return Writer(r.call)

    def C_SignFinal(self, r: Reader) -> Writer | Awaitable[Writer]:
        handle = r.u()
        room = r.fy()
        r.end()
        session, slot = self._session(handle)
        operation = self._signing(session)
        length = operation.signing.key.signature_length
        if room is None or room < length:
            return Writer(r.call).ay(None, length)
        self._start(session)
        return self._sign(r.call, session, slot, operation)

    def _signing(self, session: Session) -> SignOperation:
        if session.signing is None:
            raise Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED)
        if session.busy:
            raise Pkcs11Error(CKR.OPERATION_ACTIVE, "a call of this session is still running")
        return session.signing

    def _end_signing(self, session: Session) -> None:
        if session.signing is not None:
            session.signing.end()
            session.signing = None

    async def _sign(
        self, call: wire.Call, session: Session, slot: Slot, operation: SignOperation
    ) -> Writer:
        """One gated card operation; the operation ends whatever its outcome."""
        try:
            try:
                hash_name, digest = operation.signing.digest()
            except InputError as exc:
                raise Pkcs11Error(CKR.DATA_LEN_RANGE if exc.length else CKR.DATA_INVALID) from exc
            key = operation.spec.key
            pin, last_try = operation.pin, False
            login = self.logins.get(slot)
            if pin is None and key is AUTH_KEY and login is None and slot.login_free:
                # A key used without C_Login: the daemon's dialog logs in, as C_Login would.
                log.info("PKCS#11: %s signs with the %s key without C_Login; asking for its "
                         "PIN", self.caller, key.name)  # fmt: skip
                login = await self._verify_login(slot, None)
            if pin is None and key is AUTH_KEY and login is not None:
                pin, last_try = login.pin, login.last_try
            purpose = _("sign a document") if key is SIGN_KEY else _("prove who you are (log in)")
            request = self._request(key.pin, purpose, pin)
            request.allow_last_try = last_try
            if hash_name in LEGACY_HASHES:
                log.info("PKCS#11 C_Sign with the %s key by %s: SHA-1, signed as legacy",
                         key.name, self.caller)  # fmt: skip
            else:
                log.info("PKCS#11 C_Sign with the %s key by %s", key.name, self.caller)
            result = await self.logins.with_last_try(
                request,
                slot,
                lambda req: self.context.manager.sign(
                    key, hash_name, digest, req, reader=slot.reader
                ),
            )
            return Writer(call).ay(operation.signing.answer(result.signature))
        finally:
            session.busy = False
            operation.end()
            if session.signing is operation:
                session.signing = None


def _ulongs(writer: Writer, values: list[int], room: int | None) -> Writer:
    """A list of CK_ULONGs, or only its length when the caller asked for that or has too
    little room. An empty list is sent as such: p11-kit cannot tell "how many?" from an
    empty buffer, and both are answered right by it."""
    if values and (room is None or room < len(values)):
        return writer.au(None, len(values))
    return writer.au(values)


def _checked(policy: PinPolicy, given: bytes | None) -> bytearray | None:
    """The PIN's shape checked before anything else (None: the daemon asks)."""
    if given is None:
        return None
    try:
        return policy.check(given)
    except PinFormatError:
        try:
            length = len(given.decode("utf-8"))
        except UnicodeDecodeError:
            length = len(given)
        in_range = policy.min_length <= length <= policy.max_length
        raise Pkcs11Error(CKR.PIN_INVALID if in_range else CKR.PIN_LEN_RANGE) from None


def _length(attribute_type: int, value: wire.Value) -> int:
    kind = value_kind(attribute_type)
    if kind is ValueKind.BYTE:
        return 1
    if kind is ValueKind.ULONG:
        return 8
    assert isinstance(value, bytes)
    return len(value)


def _matches(found: TokenObject, template: tuple[Attribute, ...]) -> bool:
    for attribute in template:
        mine = found.attributes.get(attribute.type)
        if mine is None:
            return False
        if value_kind(attribute.type) is ValueKind.BYTE:
            if bool(mine) != bool(attribute.value):
                return False
        elif mine != attribute.value:
            return False
    return True


def _refuse(rv: CKR) -> Callable[[Reader], Writer]:
    def refuse(r: Reader) -> Writer:
        raise Pkcs11Error(rv)

    return refuse


async def _done(writer: Writer) -> Writer:
    return writer
