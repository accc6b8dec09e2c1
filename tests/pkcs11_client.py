"""A small PKCS#11 application over ctypes: loads a real module (p11-kit-client.so) and makes
the calls a test needs, in the order an application makes them.

As a program (so that the daemon sees a process of its own)::

    python pkcs11_client.py SCENARIO-JSON

prints one JSON line: the results, or ``{"error": "CKR_..."}`` at the first failing call. The
scenario is ``{"module": PATH, "steps": [[name, {args}], ...]}`` with the steps of
:func:`run_steps`.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

ULONG = ctypes.c_ulong
FUNCTIONS = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
]

CKR_NAMES = {
    0x0: "CKR_OK", 0x3: "CKR_SLOT_ID_INVALID", 0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD", 0x8: "CKR_NO_EVENT",
    0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
    0x30: "CKR_DEVICE_ERROR", 0x32: "CKR_DEVICE_REMOVED", 0x50: "CKR_FUNCTION_CANCELED",
    0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID",
    0x70: "CKR_MECHANISM_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE", 0x91: "CKR_OPERATION_NOT_INITIALIZED",
    0xA0: "CKR_PIN_INCORRECT", 0xA1: "CKR_PIN_INVALID", 0xA2: "CKR_PIN_LEN_RANGE",
    0xA4: "CKR_PIN_LOCKED", 0xB3: "CKR_SESSION_HANDLE_INVALID", 0xE0: "CKR_TOKEN_NOT_PRESENT",
    0xE2: "CKR_TOKEN_WRITE_PROTECTED", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
    0x101: "CKR_USER_NOT_LOGGED_IN", 0x150: "CKR_BUFFER_TOO_SMALL",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
}  # fmt: skip
MECHANISMS = {"RSA-PKCS": 0x1, "SHA1-RSA-PKCS": 0x6, "SHA256-RSA-PKCS": 0x40,
              "SHA384-RSA-PKCS": 0x41, "SHA512-RSA-PKCS": 0x42, "ECDSA": 0x1041,
              "ECDSA-SHA384": 0x1045}  # fmt: skip
CKA_CLASS, CKA_ID, CKA_VALUE, CKA_LABEL = 0x0, 0x102, 0x11, 0x3
CKO_CERTIFICATE, CKO_PRIVATE_KEY = 1, 3
CKU_USER, CKU_CONTEXT_SPECIFIC = 1, 2
CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x2, 0x4


class Pkcs11Failure(Exception):
    def __init__(self, function: str, rv: int) -> None:
        self.rv = rv
        self.name = CKR_NAMES.get(rv, f"CKR_{rv:#x}")
        super().__init__(f"{function}: {self.name}")


class Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class FunctionList(ctypes.Structure):
    _fields_ = [("version", Version)] + [(name, ctypes.c_void_p) for name in FUNCTIONS]


class Attribute(ctypes.Structure):
    _fields_ = [("type", ULONG), ("pValue", ctypes.c_void_p), ("ulValueLen", ULONG)]


class Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", ULONG), ("pParameter", ctypes.c_void_p),
                ("ulParameterLen", ULONG)]  # fmt: skip


class TokenInfo(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_char * 32), ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16), ("serialNumber", ctypes.c_char * 16), ("flags", ULONG),
        *((name, ULONG) for name in (
            "ulMaxSessionCount", "ulSessionCount", "ulMaxRwSessionCount", "ulRwSessionCount",
            "ulMaxPinLen", "ulMinPinLen", "ulTotalPublicMemory", "ulFreePublicMemory",
            "ulTotalPrivateMemory", "ulFreePrivateMemory")),
        ("hardwareVersion", Version), ("firmwareVersion", Version), ("utcTime", ctypes.c_char * 16),
    ]  # fmt: skip


class Cryptoki:
    """The calls of one loaded module."""

    def __init__(self, path: str) -> None:
        self._lib = ctypes.CDLL(path)
        pointer = ctypes.POINTER(FunctionList)()
        get = self._lib.C_GetFunctionList
        get.argtypes = [ctypes.POINTER(ctypes.POINTER(FunctionList))]
        get.restype = ULONG
        rv = get(ctypes.byref(pointer))
        if rv:
            raise Pkcs11Failure("C_GetFunctionList", rv)
        self._functions = pointer.contents

    def call(self, name: str, *args: Any, allow: tuple[int, ...] = ()) -> int:
        function = ctypes.CFUNCTYPE(ULONG)(getattr(self._functions, name))
        rv = function(*args)
        if rv and rv not in allow:
            raise Pkcs11Failure(name, rv)
        return rv

    def initialize(self) -> None:
        self.call("C_Initialize", ctypes.c_void_p())

    def finalize(self) -> None:
        self.call("C_Finalize", ctypes.c_void_p())

    def slots(self, present: bool = True) -> list[int]:
        count = ULONG()
        self.call("C_GetSlotList", ctypes.c_ubyte(present), ctypes.POINTER(ULONG)(),
                  ctypes.byref(count))  # fmt: skip
        ids = (ULONG * max(1, count.value))()
        self.call("C_GetSlotList", ctypes.c_ubyte(present), ids, ctypes.byref(count))
        return list(ids)[: count.value]

    def token_info(self, slot: int) -> TokenInfo:
        info = TokenInfo()
        self.call("C_GetTokenInfo", ULONG(slot), ctypes.byref(info))
        return info

    def open(self, slot: int, rw: bool = False) -> int:
        handle = ULONG()
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if rw else 0)
        self.call("C_OpenSession", ULONG(slot), ULONG(flags), ctypes.c_void_p(),
                  ctypes.c_void_p(), ctypes.byref(handle))  # fmt: skip
        return handle.value

    def close(self, session: int) -> None:
        self.call("C_CloseSession", ULONG(session))

    def login(self, session: int, pin: str | None, user: int = CKU_USER) -> None:
        data = pin.encode() if pin is not None else None
        self.call("C_Login", ULONG(session), ULONG(user), ctypes.c_char_p(data),
                  ULONG(len(data) if data else 0))  # fmt: skip

    def logout(self, session: int) -> None:
        self.call("C_Logout", ULONG(session))

    def find(self, session: int, klass: int, key_id: bytes | None = None) -> list[int]:
        values = [ULONG(klass)]
        template = [Attribute(CKA_CLASS, ctypes.cast(ctypes.byref(values[0]), ctypes.c_void_p),
                              ctypes.sizeof(ULONG))]  # fmt: skip
        if key_id is not None:
            buffer = ctypes.create_string_buffer(key_id, len(key_id))
            values.append(buffer)
            template.append(Attribute(CKA_ID, ctypes.cast(buffer, ctypes.c_void_p), len(key_id)))
        array = (Attribute * len(template))(*template)
        self.call("C_FindObjectsInit", ULONG(session), array, ULONG(len(template)))
        found = (ULONG * 32)()
        count = ULONG()
        self.call("C_FindObjects", ULONG(session), found, ULONG(32), ctypes.byref(count))
        self.call("C_FindObjectsFinal", ULONG(session))
        return list(found)[: count.value]

    def attribute(self, session: int, handle: int, kind: int) -> bytes:
        attr = Attribute(kind, None, 0)
        self.call("C_GetAttributeValue", ULONG(session), ULONG(handle), ctypes.byref(attr),
                  ULONG(1))  # fmt: skip
        buffer = ctypes.create_string_buffer(attr.ulValueLen)
        attr.pValue = ctypes.cast(buffer, ctypes.c_void_p)
        self.call("C_GetAttributeValue", ULONG(session), ULONG(handle), ctypes.byref(attr),
                  ULONG(1))  # fmt: skip
        return buffer.raw[: attr.ulValueLen]

    def sign(self, session: int, key: int, mechanism: str, data: bytes,
             context_pin: str | None = None, context_login: bool = False) -> bytes:  # fmt: skip
        mech = Mechanism(MECHANISMS[mechanism], None, 0)
        self.call("C_SignInit", ULONG(session), ctypes.byref(mech), ULONG(key))
        if context_login:
            self.login(session, context_pin, CKU_CONTEXT_SPECIFIC)
        length = ULONG()
        self.call("C_Sign", ULONG(session), ctypes.c_char_p(data), ULONG(len(data)),
                  ctypes.c_char_p(), ctypes.byref(length))  # fmt: skip
        out = ctypes.create_string_buffer(length.value)
        self.call("C_Sign", ULONG(session), ctypes.c_char_p(data), ULONG(len(data)), out,
                  ctypes.byref(length))  # fmt: skip
        return out.raw[: length.value]

    def wait_for_slot_event(self, flags: int) -> int:
        slot = ULONG()
        self.call("C_WaitForSlotEvent", ULONG(flags), ctypes.byref(slot), ctypes.c_void_p())
        return slot.value


def run_steps(p11: Cryptoki, steps: list[list[Any]], results: list[Any]) -> None:
    """Steps: ``open`` {slot, rw}, ``login`` {pin (null: the daemon asks)}, ``logout``,
    ``find`` {class, id}, ``cert`` {id}, ``sign`` {id, mechanism, data (hex), context_login,
    context_pin, same_key (the key handle of the last signature)}, ``close``, ``token``
    {slot}, ``wait`` {flags}, ``slots`` {present}, ``pause`` (until a line on standard input);
    ``results`` receives each step's result."""
    session = key = 0
    for name, args in steps:
        if name == "open":
            session = p11.open(args["slot"], args.get("rw", False))
            results.append(session)
        elif name == "login":
            p11.login(session, args.get("pin"))
            results.append("ok")
        elif name == "logout":
            p11.logout(session)
            results.append("ok")
        elif name == "find":
            key_id = bytes.fromhex(args["id"]) if "id" in args else None
            results.append(p11.find(session, args["class"], key_id))
        elif name == "cert":
            (handle,) = p11.find(session, CKO_CERTIFICATE, bytes.fromhex(args["id"]))
            results.append(p11.attribute(session, handle, CKA_VALUE).hex())
        elif name == "sign":
            if not (args.get("same_key") and key):  # as applications keep the handle they found
                (key,) = p11.find(session, CKO_PRIVATE_KEY, bytes.fromhex(args["id"]))
            if args.get("tolerate"):  # the step's error is its result
                try:
                    signature = p11.sign(session, key, args["mechanism"],
                                         bytes.fromhex(args["data"]), args.get("context_pin"),
                                         args.get("context_login", False))  # fmt: skip
                except Pkcs11Failure as exc:
                    results.append(exc.name)
                    continue
                results.append(signature.hex())
                continue
            signature = p11.sign(
                session,
                key,
                args["mechanism"],
                bytes.fromhex(args["data"]),
                args.get("context_pin"),
                args.get("context_login", False),
            )
            results.append(signature.hex())  # fmt: skip
        elif name == "close":
            p11.close(session)
            results.append("ok")
        elif name == "token":
            info = p11.token_info(args["slot"])
            results.append({"label": info.label.decode().rstrip(), "flags": info.flags})
        elif name == "wait":
            results.append(p11.wait_for_slot_event(args.get("flags", 0)))
        elif name == "slots":
            results.append(p11.slots(args.get("present", True)))
        elif name == "pause":
            sys.stdin.readline()  # the test says when to go on
            results.append("ok")
        else:
            raise ValueError(f"unknown step {name}")


def main() -> int:
    scenario = json.loads(sys.argv[1])
    p11 = Cryptoki(scenario["module"])
    results: list[Any] = []
    try:
        p11.initialize()
        try:
            run_steps(p11, scenario["steps"], results)
        finally:
            p11.finalize()
    except Pkcs11Failure as exc:
        print(json.dumps({"error": exc.name, "results": results}), flush=True)
        return 1
    print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
