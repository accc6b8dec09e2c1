"""p11-kit's RPC protocol: frames, the call table, and a strict parser and writer of bodies.

A frame is a 12-byte big-endian header (message id, options length, body length), the options
(the client names itself) and the body. A body is a u32 call id, the call's signature as a byte
array, then its arguments in that order. Codes of a signature: ``u`` a CK_ULONG as u64, ``y`` a
byte, ``v`` a version (2 bytes), ``s`` a space-padded string (a byte array), ``ay`` a presence
byte and a byte array, ``fy``/``fu`` the size of a buffer the caller offers, ``au`` an array of
CK_ULONGs, ``aA`` attributes with values, ``fA`` attributes with the buffer size for each, ``M``
a mechanism. Nothing here trusts a length: every read is checked against what is left, and any
mismatch is a :class:`WireError` carrying the CKR the client gets.

Two encodings drifted between p11-kit releases without a protocol version (both accepted): a
mechanism without parameters (0.24 sends ``ffffffff`` after its type, 0.25.10 sends nothing) and
buffers of nested attributes in ``fA`` (only 0.25+ sends them). Facts in
``design/p11-kit-rpc.md``; the layout is read from p11-kit's ``rpc-message.c``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from mncd.pkcs11.constants import CKA, CKR

HEADER = struct.Struct(">III")
#: The marker C_Initialize carries.
HANDSHAKE = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"
#: Newest protocol version served (2 = p11-kit 0.25.10: C_DeriveKey2); older clients get theirs.
PROTOCOL_VERSION = 2
#: Largest options block and body accepted; a frame announcing more is refused unread.
MAX_OPTIONS = 4096
MAX_BODY = 2 * 1024 * 1024
#: Most attributes in one template, and how deeply attribute arrays may nest.
MAX_ATTRIBUTES = 256
MAX_DEPTH = 2
#: A NULL byte array (or a buffer of length 0 that is not NULL, in ``fy``).
NULL_LENGTH = 0xFFFF_FFFF
#: The mechanism type that cancels an operation (p11-kit 0.25+).
NULL_MECHANISM = 0xFFFF_FFFF


class WireError(Exception):
    """A request that cannot be read; ``rv`` is the CKR its sender gets."""

    def __init__(self, rv: CKR, text: str) -> None:
        super().__init__(text)
        self.rv = rv


@dataclass(frozen=True)
class Call:
    id: int
    name: str
    request: str
    response: str


#: Every call of the protocol, in call-id order (p11-kit's ``p11_rpc_calls``).
CALLS: tuple[Call, ...] = tuple(
    Call(i, name, request, response)
    for i, (name, request, response) in enumerate(
        (
            ("ERROR", "", "u"),
            ("C_Initialize", "ayyay", ""),
            ("C_Finalize", "", ""),
            ("C_GetInfo", "", "vsusv"),
            ("C_GetSlotList", "yfu", "au"),
            ("C_GetSlotInfo", "u", "ssuvv"),
            ("C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs"),
            ("C_GetMechanismList", "ufu", "au"),
            ("C_GetMechanismInfo", "uu", "uuu"),
            ("C_InitToken", "uayz", ""),
            ("C_OpenSession", "uu", "u"),
            ("C_CloseSession", "u", ""),
            ("C_CloseAllSessions", "u", ""),
            ("C_GetSessionInfo", "u", "uuuu"),
            ("C_InitPIN", "uay", ""),
            ("C_SetPIN", "uayay", ""),
            ("C_GetOperationState", "ufy", "ay"),
            ("C_SetOperationState", "uayuu", ""),
            ("C_Login", "uuay", ""),
            ("C_Logout", "u", ""),
            ("C_CreateObject", "uaA", "u"),
            ("C_CopyObject", "uuaA", "u"),
            ("C_DestroyObject", "uu", ""),
            ("C_GetObjectSize", "uu", "u"),
            ("C_GetAttributeValue", "uufA", "aAu"),
            ("C_SetAttributeValue", "uuaA", ""),
            ("C_FindObjectsInit", "uaA", ""),
            ("C_FindObjects", "ufu", "au"),
            ("C_FindObjectsFinal", "u", ""),
            ("C_EncryptInit", "uMu", ""),
            ("C_Encrypt", "uayfy", "ay"),
            ("C_EncryptUpdate", "uayfy", "ay"),
            ("C_EncryptFinal", "ufy", "ay"),
            ("C_DecryptInit", "uMu", ""),
            ("C_Decrypt", "uayfy", "ay"),
            ("C_DecryptUpdate", "uayfy", "ay"),
            ("C_DecryptFinal", "ufy", "ay"),
            ("C_DigestInit", "uM", ""),
            ("C_Digest", "uayfy", "ay"),
            ("C_DigestUpdate", "uay", ""),
            ("C_DigestKey", "uu", ""),
            ("C_DigestFinal", "ufy", "ay"),
            ("C_SignInit", "uMu", ""),
            ("C_Sign", "uayfy", "ay"),
            ("C_SignUpdate", "uay", ""),
            ("C_SignFinal", "ufy", "ay"),
            ("C_SignRecoverInit", "uMu", ""),
            ("C_SignRecover", "uayfy", "ay"),
            ("C_VerifyInit", "uMu", ""),
            ("C_Verify", "uayay", ""),
            ("C_VerifyUpdate", "uay", ""),
            ("C_VerifyFinal", "uay", ""),
            ("C_VerifyRecoverInit", "uMu", ""),
            ("C_VerifyRecover", "uayfy", "ay"),
            ("C_DigestEncryptUpdate", "uayfy", "ay"),
            ("C_DecryptDigestUpdate", "uayfy", "ay"),
            ("C_SignEncryptUpdate", "uayfy", "ay"),
            ("C_DecryptVerifyUpdate", "uayfy", "ay"),
            ("C_GenerateKey", "uMaA", "u"),
            ("C_GenerateKeyPair", "uMaAaA", "uu"),
            ("C_WrapKey", "uMuufy", "ay"),
            ("C_UnwrapKey", "uMuayaA", "u"),
            ("C_DeriveKey", "uMuaA", "u"),
            ("C_SeedRandom", "uay", ""),
            ("C_GenerateRandom", "ufy", "ay"),
            ("C_WaitForSlotEvent", "u", "u"),
            # PKCS #11 3.0 (p11-kit 0.25)
            ("C_LoginUser", "uuayay", ""),
            ("C_SessionCancel", "uu", ""),
            ("C_MessageEncryptInit", "uMu", ""),
            ("C_EncryptMessage", "uayayayfy", "ay"),
            ("C_EncryptMessageBegin", "uayay", ""),
            ("C_EncryptMessageNext", "uayayfyu", "ay"),
            ("C_MessageEncryptFinal", "u", ""),
            ("C_MessageDecryptInit", "uMu", ""),
            ("C_DecryptMessage", "uayayayfy", "ay"),
            ("C_DecryptMessageBegin", "uayay", ""),
            ("C_DecryptMessageNext", "uayayfyu", "ay"),
            ("C_MessageDecryptFinal", "u", ""),
            ("C_MessageSignInit", "uMu", ""),
            ("C_SignMessage", "uayayfy", "ay"),
            ("C_SignMessageBegin", "uay", ""),
            ("C_SignMessageNext", "uayayyfy", "ay"),
            ("C_MessageSignFinal", "u", ""),
            ("C_MessageVerifyInit", "uMu", ""),
            ("C_VerifyMessage", "uayayay", ""),
            ("C_VerifyMessageBegin", "uay", ""),
            ("C_VerifyMessageNext", "uayayay", ""),
            ("C_MessageVerifyFinal", "u", ""),
            ("C_InitToken2", "uays", ""),
            ("C_DeriveKey2", "uMuaA", "uPu"),
        )
    )
)
CALLS_BY_NAME = {call.name: call for call in CALLS}


class ValueKind(Enum):
    """How an attribute's value travels (p11-kit's ``map_attribute_to_value_type``)."""

    BYTE = 0
    ULONG = 1
    ATTRIBUTE_ARRAY = 2
    MECHANISM_TYPE_ARRAY = 3
    DATE = 4
    BYTE_ARRAY = 5


_BYTE_TYPES = frozenset(
    {0x001, 0x002, 0x086, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B,
     0x10C, 0x162, 0x163, 0x164, 0x165, 0x170, 0x171, 0x200, 0x202, 0x210, 0x301, 0x302,
     0x405}
)  # fmt: skip
_ULONG_TYPES = frozenset(
    {0x000, 0x080, 0x087, 0x088, 0x100, 0x121, 0x133, 0x134, 0x160, 0x161, 0x166, 0x201,
     0x300, 0x400, 0x401, 0x402, 0x403, 0x404, 0x406, 0x500}
)  # fmt: skip
_ARRAY_TYPES = frozenset({CKA.WRAP_TEMPLATE, CKA.UNWRAP_TEMPLATE, CKA.DERIVE_TEMPLATE})


def value_kind(attribute_type: int) -> ValueKind:
    """How values of ``attribute_type`` are encoded; unknown types travel as byte arrays."""
    if attribute_type in _BYTE_TYPES:
        return ValueKind.BYTE
    if attribute_type in _ULONG_TYPES:
        return ValueKind.ULONG
    if attribute_type in _ARRAY_TYPES:
        return ValueKind.ATTRIBUTE_ARRAY
    if attribute_type == CKA.ALLOWED_MECHANISMS:
        return ValueKind.MECHANISM_TYPE_ARRAY
    if attribute_type in (CKA.START_DATE, CKA.END_DATE):
        return ValueKind.DATE
    return ValueKind.BYTE_ARRAY


#: A decoded attribute value: an int (BYTE, ULONG), bytes (BYTE_ARRAY, DATE), a tuple of ints
#: (mechanism types) or a tuple of attributes (templates).
Value = int | bytes | tuple


@dataclass(frozen=True)
class Attribute:
    """An attribute of a template; ``value`` None when the sender marked it unavailable."""

    type: int
    value: Value | None


@dataclass(frozen=True)
class AttributeRequest:
    """An attribute asked for, with the size of the caller's buffer (0: "how big?")."""

    type: int
    size: int


@dataclass(frozen=True)
class Mechanism:
    """A mechanism and its raw parameter bytes (None: no parameter; type None: cancel)."""

    type: int | None
    parameter: bytes | None


def frame(message_id: int, body: bytes, options: bytes = b"") -> bytes:
    """A whole frame."""
    return HEADER.pack(message_id, len(options), len(body)) + options + body


# -- reading ---------------------------------------------------------------------------------


class Reader:
    """Reads one request body against its call's signature, refusing anything else."""

    def __init__(self, body: bytes) -> None:
        self._data = memoryview(body)
        self._pos = 0
        call_id = self._u32()
        if call_id == 0 or call_id >= len(CALLS):
            raise WireError(CKR.FUNCTION_NOT_SUPPORTED, f"unknown call {call_id}")
        self.call = CALLS[call_id]
        signature = self._array("call signature")
        if signature is None or bytes(signature) != self.call.request.encode():
            raise WireError(CKR.ARGUMENTS_BAD, f"{self.call.name}: wrong signature")
        self._signature = self.call.request
        self._sig_pos = 0

    # raw reads

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > len(self._data) - self._pos:
            raise WireError(CKR.ARGUMENTS_BAD, f"{what} runs past the end of the message")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def _u8(self, what: str = "byte") -> int:
        return self._take(1, what)[0]

    def _u32(self, what: str = "length") -> int:
        return int.from_bytes(self._take(4, what), "big")

    def _u64(self, what: str = "number") -> int:
        return int.from_bytes(self._take(8, what), "big")

    def _array(self, what: str) -> bytes | None:
        length = self._u32(what)
        if length == NULL_LENGTH:
            return None
        if length >= 0x7FFF_FFFF:
            raise WireError(CKR.ARGUMENTS_BAD, f"{what}: impossible length")
        return bytes(self._take(length, what))

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _code(self, code: str) -> None:
        if not self._signature.startswith(code, self._sig_pos):
            raise AssertionError(f"{self.call.name}: reading {code!r} out of order")
        self._sig_pos += len(code)

    # one per signature code

    def u(self) -> int:
        self._code("u")
        return self._u64()

    def y(self) -> int:
        self._code("y")
        return self._u8()

    def ay(self) -> bytes | None:
        """A byte array: None when the caller passed NULL."""
        self._code("ay")
        present = self._u8("presence byte")
        if present == 0:
            self._u32()  # the length of the absent array (p11-kit sends it)
            return None
        if present != 1:
            raise WireError(CKR.ARGUMENTS_BAD, "bad presence byte")
        return self._array("byte array")

    def fy(self) -> int | None:
        """The size of the caller's output buffer: None asks for the size only."""
        self._code("fy")
        size = self._u32()
        if size == 0:
            return None
        return 0 if size == NULL_LENGTH else size

    def fu(self) -> int | None:
        """The count of the caller's CK_ULONG buffer: None asks for the count only."""
        self._code("fu")
        count = self._u32()
        return None if count == 0 else count

    def aA(self) -> tuple[Attribute, ...]:
        self._code("aA")
        return self._attributes(0)

    def _attributes(self, depth: int) -> tuple[Attribute, ...]:
        if depth > MAX_DEPTH:
            raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, "attribute arrays nested too deeply")
        count = self._u32("attribute count")
        if count > MAX_ATTRIBUTES or count * 5 > self.remaining:
            raise WireError(CKR.ARGUMENTS_BAD, "too many attributes")
        return tuple(self._attribute(depth) for _ in range(count))

    def _attribute(self, depth: int) -> Attribute:
        kind_of = self._u32("attribute type")
        valid = self._u8("attribute validity")
        if valid == 0:
            return Attribute(kind_of, None)
        if valid != 1:
            raise WireError(CKR.ARGUMENTS_BAD, "bad attribute validity byte")
        length = self._u32("attribute length")
        kind = value_kind(kind_of)
        if kind is ValueKind.BYTE:
            if length != 1:
                raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, f"attribute {kind_of:#x}: length")
            return Attribute(kind_of, self._u8())
        if kind is ValueKind.ULONG:
            if length != 8:
                raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, f"attribute {kind_of:#x}: length")
            return Attribute(kind_of, self._u64())
        if kind is ValueKind.ATTRIBUTE_ARRAY:
            return Attribute(kind_of, self._attributes(depth + 1))
        if kind is ValueKind.MECHANISM_TYPE_ARRAY:
            count = self._u32("mechanism count")
            if count * 8 > self.remaining:
                raise WireError(CKR.ARGUMENTS_BAD, "mechanism array runs past the end")
            return Attribute(kind_of, tuple(self._u64() for _ in range(count)))
        value = self._array("attribute value")
        if value is None:
            if length:
                raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, "attribute without its value")
            value = b""
        if len(value) != length:
            raise WireError(CKR.ARGUMENTS_BAD, "attribute value and its length disagree")
        if kind is ValueKind.DATE and len(value) not in (0, 8):
            raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, "a date is 8 characters")
        return Attribute(kind_of, value)

    def fA(self) -> tuple[AttributeRequest, ...]:
        """The attributes asked for. Clients of p11-kit 0.25+ follow a template attribute's
        size with the buffers of its members; older ones do not: whichever reading ends the
        message exactly is taken."""
        self._code("fA")
        start = self._pos
        try:
            requests = self._requests(0, nested=True)
            if self.remaining == 0:
                return requests
        except WireError:
            pass
        self._pos = start
        return self._requests(0, nested=False)

    def _requests(self, depth: int, nested: bool) -> tuple[AttributeRequest, ...]:
        if depth > MAX_DEPTH:
            raise WireError(CKR.ATTRIBUTE_VALUE_INVALID, "attribute arrays nested too deeply")
        count = self._u32("attribute count")
        if count > MAX_ATTRIBUTES or count * 8 > self.remaining:
            raise WireError(CKR.ARGUMENTS_BAD, "too many attributes")
        requests = []
        for _ in range(count):
            kind_of = self._u32("attribute type")
            size = self._u32("attribute buffer size")
            if nested and size and value_kind(kind_of) is ValueKind.ATTRIBUTE_ARRAY:
                self._requests(depth + 1, nested)
            requests.append(AttributeRequest(kind_of, size))
        return tuple(requests)

    def M(self, tail: int) -> Mechanism:
        """A mechanism followed by ``tail`` bytes of fixed-size arguments.

        Mechanisms without parameters come as their type alone (p11-kit 0.25.10+), with a
        NULL byte array after it (0.24), or with a zero has-parameter byte: told apart by what
        is left. Parameters are returned raw; only mechanisms without any are served.
        """
        self._code("M")
        kind_of = self._u32("mechanism type")
        rest = self.remaining - tail
        if rest < 0:
            raise WireError(CKR.ARGUMENTS_BAD, "mechanism runs past the end of the message")
        if kind_of == NULL_MECHANISM:
            if rest:
                raise WireError(CKR.ARGUMENTS_BAD, "parameters after a NULL mechanism")
            return Mechanism(None, None)
        raw = bytes(self._take(rest, "mechanism parameter"))
        if raw in (b"", b"\x00", NULL_LENGTH.to_bytes(4, "big")):
            return Mechanism(kind_of, None)
        return Mechanism(kind_of, raw)

    def end(self) -> None:
        """Every argument read, nothing left over."""
        if self._sig_pos != len(self._signature):
            raise AssertionError(f"{self.call.name}: arguments left unread")
        if self.remaining:
            raise WireError(CKR.ARGUMENTS_BAD, f"{self.call.name}: bytes after the arguments")


# -- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeAnswer:
    """One attribute of a C_GetAttributeValue answer.

    ``value`` is the encoded value (None: unavailable, sent as invalid); with ``size_only`` the
    caller asked how big it is and gets the length without the bytes.
    """

    type: int
    value: Value | None
    size_only: bool = False


class Writer:
    """Builds one response body in the order of the call's response signature."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._signature = call.response
        self._sig_pos = 0
        self._out = bytearray()
        self._out += call.id.to_bytes(4, "big")
        self._array(call.response.encode())

    @classmethod
    def error(cls, rv: int) -> bytes:
        """The body of an error reply (call id 0)."""
        writer = cls(CALLS[0])
        writer.u(rv)
        return writer.body()

    def _code(self, code: str) -> None:
        if not self._signature.startswith(code, self._sig_pos):
            raise AssertionError(f"{self.call.name}: writing {code!r} out of order")
        self._sig_pos += len(code)

    def _array(self, data: bytes | None) -> None:
        if data is None:
            self._out += NULL_LENGTH.to_bytes(4, "big")
        else:
            self._out += len(data).to_bytes(4, "big") + data

    def u(self, value: int) -> Writer:
        self._code("u")
        self._out += int(value).to_bytes(8, "big")
        return self

    def y(self, value: int) -> Writer:
        self._code("y")
        self._out.append(value)
        return self

    def v(self, major: int, minor: int) -> Writer:
        self._code("v")
        self._out += bytes((major, minor))
        return self

    def s(self, text: str, width: int) -> Writer:
        """A space-padded UTF-8 string of ``width`` bytes (cut on a character boundary)."""
        self._code("s")
        self._array(padded(text, width))
        return self

    def ay(self, data: bytes | None, length: int = 0) -> Writer:
        """Bytes, or (None) only their ``length``: the answer to "how big?"."""
        self._code("ay")
        if data is None:
            self._out.append(0)
            self._out += length.to_bytes(4, "big")
        else:
            self._out.append(1)
            self._array(data)
        return self

    def au(self, values: list[int] | None, count: int = 0) -> Writer:
        """CK_ULONGs, or (None) only their ``count``."""
        self._code("au")
        if values is None:
            self._out.append(0)
            self._out += count.to_bytes(4, "big")
        else:
            self._out.append(1)
            self._out += len(values).to_bytes(4, "big")
            for value in values:
                self._out += value.to_bytes(8, "big")
        return self

    def aA(self, answers: list[AttributeAnswer]) -> Writer:
        self._code("aA")
        self._out += len(answers).to_bytes(4, "big")
        for answer in answers:
            self._attribute(answer)
        return self

    def _attribute(self, answer: AttributeAnswer) -> None:
        self._out += answer.type.to_bytes(4, "big")
        if answer.value is None:
            self._out.append(0)
            return
        self._out.append(1)
        kind = value_kind(answer.type)
        if kind is ValueKind.BYTE:
            assert isinstance(answer.value, int)
            self._out += (1).to_bytes(4, "big")
            self._out.append(0 if answer.size_only else answer.value)
        elif kind is ValueKind.ULONG:
            assert isinstance(answer.value, int)
            self._out += (8).to_bytes(4, "big")
            self._out += (0 if answer.size_only else answer.value).to_bytes(8, "big")
        elif kind in (ValueKind.BYTE_ARRAY, ValueKind.DATE):
            assert isinstance(answer.value, bytes)
            self._out += len(answer.value).to_bytes(4, "big")
            self._array(None if answer.size_only else answer.value)
        else:  # templates and mechanism lists are never served
            raise AssertionError(f"attribute {answer.type:#x} cannot be answered")

    def body(self) -> bytes:
        if self._sig_pos != len(self._signature):
            raise AssertionError(f"{self.call.name}: response incomplete")
        return bytes(self._out)


def padded(text: str, width: int) -> bytes:
    """``text`` in UTF-8, cut to ``width`` bytes without splitting a character, space-padded."""
    data = text.encode("utf-8")[:width]
    while data:
        try:
            data.decode("utf-8")
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return data.ljust(width, b" ")
