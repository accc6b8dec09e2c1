"""The PKCS#11 server's parser against hostile input: in-process (hypothesis drives the reader
with random and mutated bodies) and through the socket of a running daemon (malformed frames,
wrong lengths, unknown calls, hostile attribute templates, clients that vanish mid-call), while
other applications keep working."""

from __future__ import annotations

import random
import socket
import struct

import faultstats
import pytest
from busstack import wait_for
from faultkit import verifies_with_pin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkcs11stack import AUTH_SLOT, pkcs11_daemon, wait_for_token

from mncd.pkcs11 import wire
from mncd.pkcs11.constants import CKA, CKM, CKR

CALLS = wire.CALLS_BY_NAME


# -- requests as p11-kit-client.so builds them ---------------------------------------------


def u(n: int) -> bytes:
    return n.to_bytes(8, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def ay(data: bytes | None) -> bytes:
    return b"\x00" + u32(0) if data is None else b"\x01" + u32(len(data)) + data


def request(name: str, *parts: bytes, signature: str | None = None) -> bytes:
    call = CALLS[name]
    sig = (call.request if signature is None else signature).encode()
    return u32(call.id) + u32(len(sig)) + sig + b"".join(parts)


INITIALIZE = request("C_Initialize", ay(wire.HANDSHAKE), b"\x00", ay(b"\x00"))


def template(*attributes: tuple[int, bytes]) -> bytes:
    """An ``aA`` of byte-array attributes (type, value)."""
    out = u32(len(attributes))
    for kind, value in attributes:
        out += u32(kind) + b"\x01" + u32(len(value)) + u32(len(value)) + value
    return out


class RawClient:
    """A PKCS#11 application speaking the wire protocol itself."""

    def __init__(self, path: str, version: int = 2) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.sock.sendall(bytes([version]))
        self.version = self._exactly(1)[0]
        self.next_id = 1

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def send(self, body: bytes, options: bytes = b"client") -> int:
        message_id = self.next_id
        self.next_id += 1
        self.sock.sendall(wire.frame(message_id, body, options))
        return message_id

    def receive(self) -> tuple[int, bytes]:
        message_id, options_length, length = struct.unpack(">III", self._exactly(12))
        self._exactly(options_length)
        return message_id, self._exactly(length)

    def call(self, body: bytes) -> tuple[int, bytes]:
        """(CKR, reply body): the CKR of an error reply, or 0 with the reply."""
        sent = self.send(body)
        message_id, reply = self.receive()
        assert message_id == sent
        if reply[:4] == u32(0):
            assert reply[4:9] == u32(1) + b"u" and len(reply) == 17
            return int.from_bytes(reply[9:17], "big"), reply
        return CKR.OK, reply

    def close(self) -> None:
        self.sock.close()


# -- in-process ------------------------------------------------------------------------------

fuzz = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


@fuzz
@given(body=st.binary(max_size=300))
def test_random_bodies_are_refused_with_a_ckr(body):
    try:
        reader = wire.Reader(body)
    except wire.WireError as exc:
        assert exc.rv in (CKR.ARGUMENTS_BAD, CKR.FUNCTION_NOT_SUPPORTED)
    else:
        assert reader.call.request.encode() in body
    faultstats.add("fuzz_in_process")


valid_bodies = st.sampled_from([
    INITIALIZE,
    request("C_GetSlotList", b"\x01", u32(8)),
    request("C_GetAttributeValue", u(1), u(9), u32(2) + u32(CKA.VALUE) + u32(0) + u32(0) + u32(8)),
    request("C_FindObjectsInit", u(1), template((CKA.LABEL, b"x"), (CKA.ID, b"\x01"))),
    request("C_SignInit", u(1), u32(CKM.SHA256_RSA_PKCS) + u32(0xFFFFFFFF), u(11)),
    request("C_Sign", u(1), ay(b"data"), u32(256)),
    request("C_Login", u(1), u(1), ay(b"1234")),
])  # fmt: skip


@fuzz
@given(body=valid_bodies, cut=st.integers(0, 200), flips=st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))  # fmt: skip
def test_mutated_requests_are_parsed_strictly(body, cut, flips):
    """Truncated and bit-flipped requests: every argument reader either returns a value or
    raises WireError; nothing else escapes."""
    data = bytearray(body[: len(body) - cut % (len(body) + 1)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    try:
        reader = wire.Reader(bytes(data))
        codes = _codes(reader.call.request)
        if not all(hasattr(reader, code) for code in codes):
            return  # a call whose arguments the server never reads (refused unread)
        for code in codes:
            if code == "M":
                reader.M(tail=8 if reader.call.request.endswith("Mu") else 0)
            else:
                getattr(reader, code)()
        reader.end()
    except wire.WireError:
        pass
    faultstats.add("fuzz_in_process")


def _codes(signature: str) -> list[str]:
    codes, i = [], 0
    while i < len(signature):
        step = 2 if signature[i] in "af" else 1
        codes.append(signature[i : i + step])
        i += step
    return codes


def test_both_mechanism_encodings_and_hostile_templates():
    for parameter in (b"", u32(0xFFFFFFFF), b"\x00"):  # p11-kit 0.25.10+, 0.24, has-param 0
        reader = wire.Reader(request("C_SignInit", u(1), u32(CKM.RSA_PKCS) + parameter, u(9)))
        reader.u()
        assert reader.M(tail=8) == wire.Mechanism(CKM.RSA_PKCS, None)
        assert reader.u() == 9
        reader.end()
    # A template claiming four billion attributes, nested templates beyond any use, a value
    # longer than the message, a CK_ULONG of the wrong size: each a CKR, none a crash.
    nested = u32(1) + u32(CKA.WRAP_TEMPLATE) + b"\x01" + u32(24)
    for hostile, rv in (
        (u32(0xFFFFFFFF), CKR.ARGUMENTS_BAD),
        (nested * 5 + u32(0), CKR.ATTRIBUTE_VALUE_INVALID),
        (u32(1) + u32(CKA.LABEL) + b"\x01" + u32(9) + u32(0x7FFFFFF0) + b"x", CKR.ARGUMENTS_BAD),
        (u32(1) + u32(CKA.CLASS) + b"\x01" + u32(4) + u(1), CKR.ATTRIBUTE_VALUE_INVALID),
    ):
        reader = wire.Reader(request("C_FindObjectsInit", u(1), hostile))
        reader.u()
        with pytest.raises(wire.WireError) as error:
            reader.aA()
        assert error.value.rv == rv


# -- through the daemon's socket -------------------------------------------------------------


@pytest.fixture
def served(tmp_path, sandbox):
    with pkcs11_daemon(tmp_path, sandbox.env, ["hold"]) as daemon:
        yield daemon


def test_malformed_frames_get_a_ckr_and_disturb_no_one(served, card, tmp_path):
    wait_for_token(served)
    path = str(served.socket)
    bystander = RawClient(path)
    assert bystander.call(INITIALIZE)[0] == CKR.OK
    client = RawClient(path, version=7)
    assert client.version == 2  # newer clients are answered in the newest version served
    assert client.call(request("C_GetInfo"))[0] == CKR.CRYPTOKI_NOT_INITIALIZED
    assert client.call(INITIALIZE)[0] == CKR.OK
    assert client.call(INITIALIZE)[0] == CKR.CRYPTOKI_ALREADY_INITIALIZED
    cases = [
        (b"", CKR.ARGUMENTS_BAD),
        (u32(9999), CKR.FUNCTION_NOT_SUPPORTED),
        (u32(0) + u32(1) + b"u", CKR.FUNCTION_NOT_SUPPORTED),
        (request("C_GetInfo", signature="u"), CKR.ARGUMENTS_BAD),
        (request("C_GetSlotInfo"), CKR.ARGUMENTS_BAD),  # argument missing
        (request("C_GetSlotInfo", u(0), b"extra"), CKR.ARGUMENTS_BAD),
        (request("C_GetSlotInfo", u(2**40)), CKR.SLOT_ID_INVALID),
        (request("C_OpenSession", u(AUTH_SLOT), u(0)), CKR.SESSION_PARALLEL_NOT_SUPPORTED),
        (request("C_Login", u(77), u(1), ay(b"1234")), CKR.SESSION_HANDLE_INVALID),
        (request("C_CreateObject", u(1), template()), CKR.TOKEN_WRITE_PROTECTED),
        (request("C_Encrypt", u(1), ay(b""), u32(0)), CKR.FUNCTION_NOT_SUPPORTED),
        (request("C_FindObjectsInit", u(1), u32(0xFFFFFFF0)), CKR.ARGUMENTS_BAD),
        (request("C_GetAttributeValue", u(1), u(1), u32(5000)), CKR.ARGUMENTS_BAD),
    ]
    for body, rv in cases:
        assert client.call(body)[0] == rv, body.hex()

    # A session, then hostile calls on it: still nothing reaches the card.
    card.commands(clear=True)
    rv, reply = client.call(request("C_OpenSession", u(AUTH_SLOT), u(4)))
    assert rv == CKR.OK
    session = reply[-8:]
    on_session = [
        (request("C_Login", session, u(1), ay(b"12345")), CKR.PIN_LEN_RANGE),
        (request("C_Login", session, u(1), ay("１２３４".encode())), CKR.PIN_INVALID),
        (request("C_Login", session, u(0), ay(b"1234")), CKR.USER_TYPE_INVALID),
        (request("C_SignInit", session, u32(CKM.SHA256_RSA_PKCS), u(AUTH_SLOT * 8 + 3)),
         CKR.USER_NOT_LOGGED_IN),
        (request("C_SignInit", session, u32(0x250) + b"\x01" + u32(4) + b"\xff" * 4, u(5)),
         CKR.KEY_HANDLE_INVALID),
        (request("C_Sign", session, ay(b"x"), u32(256)), CKR.OPERATION_NOT_INITIALIZED),
        (request("C_FindObjectsInit", session, template((CKA.LABEL, b"a" * 70000))), CKR.OK),
        (request("C_FindObjectsInit", session, template()), CKR.OPERATION_ACTIVE),
        (request("C_GetAttributeValue", session, u(12345), u32(0)), CKR.OBJECT_HANDLE_INVALID),
    ]  # fmt: skip
    for body, rv in on_session:
        assert client.call(body)[0] == rv, body.hex()
    assert verifies_with_pin(card.commands()) == 0

    # Random bytes in well-formed frames: an error each, the connection stays.
    chaos = random.Random(18)
    for _ in range(300):
        body = bytes(chaos.randrange(256) for _ in range(chaos.randrange(64)))
        if chaos.random() < 0.5:
            call = chaos.choice(wire.CALLS[1:])
            body = request(call.name) + body
        rv, _reply = client.call(body)
        faultstats.add("fuzz_stack")
    # An oversized frame cannot be skipped: answered, then that connection alone ends.
    client.sock.sendall(struct.pack(">III", 99, 0, wire.MAX_BODY + 1))
    message_id, reply = client.receive()
    assert message_id == 99 and reply[:4] == u32(0)
    with pytest.raises((ConnectionError, OSError)):
        client.call(request("C_GetInfo"))
    # The bystander and a real application are served as before.
    assert bystander.call(request("C_GetInfo"))[0] == CKR.OK
    listing = served.tool("--slot", str(AUTH_SLOT), "--login", "--pin", card.profile.auth_pin,
                          "-O")  # fmt: skip
    assert listing.returncode == 0 and "Private Key Object" in listing.stdout
    bystander.close()
    assert "Traceback" not in served.daemon.log


def test_a_client_that_vanishes_mid_call_loses_only_its_call(served, card):
    wait_for_token(served)
    card.commands(clear=True)
    path = str(served.socket)
    leaving = RawClient(path)
    assert leaving.call(INITIALIZE)[0] == CKR.OK
    session = leaving.call(request("C_OpenSession", u(AUTH_SLOT), u(4)))[1][-8:]
    leaving.send(request("C_Login", session, u(1), ay(None)))  # NULL PIN: the dialog opens
    wait_for(lambda: served.pinentry.commands("GETPIN"), "the PIN dialog")
    (dialog,) = served.pinentry.commands("START")
    leaving.close()  # the application crashes while the dialog is open
    wait_for(lambda: not _alive(int(dialog["pid"])), "the dialog to be closed")
    assert verifies_with_pin(card.commands()) == 0
    listing = served.tool("--slot", str(AUTH_SLOT), "--login", "--pin", card.profile.auth_pin,
                          "-O")  # fmt: skip
    assert listing.returncode == 0 and "Private Key Object" in listing.stdout
    faultstats.fault(survived=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
