"""Bad input over D-Bus: wrong argument types, empty and oversized data, unknown hashes and
options, and malformed PINs of every kind. Each is refused with a typed error, and not one APDU
reaches the card (checked in the virtual card's log)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import faultstats
import pytest
from busstack import BUS_NAME, INTERFACE, OBJECT_PATH
from conftest import READERS, wait_for_card
from dbus_next import Variant
from faultkit import ERR, ERROR_TEXTS, SECRET_CARD, Stack, authenticate, verify_rsa

from mncd.api import MAX_DATA
from mncd.client import BusError, BusUnavailable, MyNumberCard
from mncd.errors import MncdError
from mncd.vcard.control import CardControl
from mncd.vcard.profile import CardProfile

INVALID = ERR + "InvalidArgument"
CARD = "bad-input"
PIN_FORMAT = ERR + "PinFormat"


@pytest.fixture(scope="module")
def stack(sandbox, tmp_path_factory) -> Iterator[Stack]:
    """The daemon with one card (distinctive secrets) for the whole module."""
    control = sandbox.control
    control.insert(CardProfile.from_dict({**CardProfile().to_dict(), **SECRET_CARD}), 0, CARD)
    wait_for_card(READERS[0], present=True)
    running = Stack(tmp_path_factory.mktemp("bad-input"), sandbox.env).start()
    running.wait_state("card-present")
    yield running
    log = running.daemon.log
    running.close()
    control.remove(0)
    wait_for_card(READERS[0], present=False)
    assert "Traceback" not in log


@pytest.fixture
def r(stack, sandbox) -> Rejections:
    rejections = Rejections(stack, sandbox.control)
    rejections.commands()  # start from an empty APDU log
    return rejections


@dataclass(frozen=True)
class Reply:
    """What the caller got: the reply's body, or an error's D-Bus name and text."""

    body: list[Any] = field(default_factory=list)
    error: str | None = None
    text: str = ""


async def raw_call(address: str, member: str, signature: str, body: list[Any]) -> Reply | None:
    """Send a method call with any signature; the reply, or None when the bus dropped us."""
    card = await MyNumberCard.connect(address)
    try:
        return Reply(await card.call(member, signature, body, timeout=60))
    except MncdError as exc:  # one of the API's errors, as a client application sees it
        return Reply(error=exc.dbus_name(), text=exc.text)
    except BusError as exc:
        return Reply(error=exc.name, text=exc.text)
    except BusUnavailable:
        return None  # the bus itself refused the message and closed the connection
    finally:
        await card.close()


class Rejections:
    """Sends bad inputs, checks each is refused as expected with the card untouched."""

    def __init__(self, stack: Stack, control: CardControl) -> None:
        self.stack = stack
        self.control = control
        self.failures: list[str] = []

    def commands(self) -> list[str]:
        """APDUs the card answered since the last look."""
        return self.control.commands(CARD, clear=True)

    def expect(self, label: str, reply: Reply | None, error: str, secret: str = "") -> None:
        sent = self.commands()
        if reply is None:
            ok = error == "bus" and not sent
            text = "(the bus refused it)"
        else:
            text = reply.text if reply.error is not None else " ".join(map(str, reply.body))
            ERROR_TEXTS.append(text)
            ok = reply.error == error and not sent and (not secret or secret not in text)
            if error == "bus":  # the bus let it through: then it must be refused by us
                ok = reply.error is not None and not sent
        faultstats.bad_input(untouched=ok)
        if not ok:
            name = reply.error if reply is not None else None
            self.failures.append(f"{label}: got {name} {text[:120]!r}, APDUs {sent[:3]}")

    def call(self, label: str, member: str, signature: str, body: list[Any], error: str) -> None:
        reply = asyncio.run(raw_call(self.stack.address, member, signature, body))
        secret = next((v.value for v in _variants(body) if isinstance(v.value, str)), "")
        self.expect(label, reply, error, secret if len(secret) >= 4 else "")

    def check(self) -> None:
        assert not self.failures, "\n".join(self.failures)
        assert self.stack.daemon.process.poll() is None


def _variants(body: list[Any]) -> list[Variant]:
    return [
        v for arg in body if isinstance(arg, dict) for v in arg.values() if isinstance(v, Variant)
    ]


def pin(value: Any, signature: str = "s") -> dict[str, Variant]:
    return {"pin": Variant(signature, value)}


def test_wrong_argument_types(stack, r):
    cases = [
        ("Authenticate", "s", ["hello"]),
        ("Authenticate", "ay", [b"x"]),
        ("Authenticate", "aya{ss}", [b"x", {"pin": "1234"}]),
        ("Authenticate", "aysa{sv}", [b"x", "sha256", {}]),
        ("Authenticate", "a{sv}ay", [{}, b"x"]),
        ("Authenticate", "", []),
        ("Sign", "ays", [b"x", "sha256"]),
        ("Sign", "aya{sv}", [b"x", pin("QZ7XK93W")]),
        ("Sign", "aysa{sv}x", [b"x", "sha256", {}, 1]),
        ("Sign", "sss", ["x", "sha256", "QZ7XK93W"]),
        ("Sign", "ai" + "sa{sv}", [[1, 2], "sha256", {}]),
        ("GetStatus", "s", ["x"]),
        ("GetCertificate", "i", [1]),
        ("GetCertificate", "", []),
        ("CheckPersonalData", "s", ["6482"]),
        ("CheckPersonalData", "a{ss}", [{"pin": "6482"}]),
    ]
    for member, signature, body in cases:
        r.call(f"{member}({signature})", member, signature, body, INVALID)
    # The same through busctl, as a shell script would send it.
    result = subprocess.run(
        ["busctl", f"--address={stack.address}", "call", BUS_NAME, OBJECT_PATH, INTERFACE,
         "Authenticate", "s", "1234"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    refused = result.returncode != 0 and "takes arguments (aya{sv}), not (s)" in result.stderr
    faultstats.bad_input(untouched=refused and not r.commands())
    assert refused, result.stderr
    r.check()


def test_bad_data_hashes_and_options(r):
    ok_pin = pin(SECRET_CARD["auth_pin"])
    cases: list[tuple[str, str, str, list[Any]]] = [
        ("empty challenge", "Authenticate", "aya{sv}", [b"", ok_pin]),
        ("empty document", "Sign", "aysa{sv}", [b"", "sha256", {}]),
        ("data over 1 MiB", "Authenticate", "aya{sv}", [b"\0" * (MAX_DATA + 1), ok_pin]),
        ("data of 4 MiB", "Sign", "aysa{sv}", [b"\1" * (4 * MAX_DATA), "sha256", {}]),
    ]
    for hash_name in ("md5", "sha1", "SHA256", "sha-256", "", "sha256 ", "sha3_256", "x" * 4096):
        cases.append((f"hash {hash_name[:12]!r}", "Sign", "aysa{sv}", [b"d", hash_name, {}]))
        opts = {"hash": Variant("s", hash_name), **ok_pin}
        cases.append((f"auth hash {hash_name[:12]!r}", "Authenticate", "aya{sv}", [b"d", opts]))
    for options in (
        {"colour": Variant("s", "red")},
        {"PIN": Variant("s", SECRET_CARD["auth_pin"])},
        {"pin ": Variant("s", SECRET_CARD["auth_pin"])},
        {"x" * 10000: Variant("b", True)},
        {"pin": Variant("i", 7395)},
        {"pin": Variant("ay", b"7395")},
        {"pin": Variant("as", ["7395"])},
        {"pin": Variant("v", Variant("s", "7395"))},
        {"digest": Variant("s", "true"), **ok_pin},
        {"hash": Variant("i", 256), **ok_pin},
        {"interactive": Variant("s", "no"), **ok_pin},
        {"allow-last-try": Variant("i", 1), **ok_pin},
        {"sign-pin": Variant("s", "QZ7XK93W"), **ok_pin},  # only CheckPersonalData has it
    ):
        label = f"options {sorted(options)[0][:12]!r}"
        cases.append((label, "Authenticate", "aya{sv}", [b"d", options]))
    for size in (0, 1, 31, 33, 64):  # digest=true: exactly the hash size, or nothing is sent
        options = {"digest": Variant("b", True), **ok_pin}
        cases.append((f"digest of {size}", "Authenticate", "aya{sv}", [b"d" * size, options]))
    cases += [
        ("sha512 digest of 32", "Sign", "aysa{sv}",
         [b"d" * 32, "sha512", {"digest": Variant("b", True)}]),
        ("certificate sign", "GetCertificate", "s", ["sign"]),
        ("certificate ''", "GetCertificate", "s", [""]),
        ("certificate AUTH", "GetCertificate", "s", ["AUTH"]),
        ("certificate huge", "GetCertificate", "s", ["auth" * 100000]),
        ("check unknown option", "CheckPersonalData", "a{sv}", [{"name": Variant("s", "x")}]),
        ("check pin type", "CheckPersonalData", "a{sv}", [{"pin": Variant("u", 6482)}]),
    ]  # fmt: skip
    for label, member, signature, body in cases:
        r.call(label, member, signature, body, INVALID)
    r.check()


NUL_SENDER = """
import asyncio, sys
from dbus_next import Variant
from mncd.client import BusError, MyNumberCard
from mncd.errors import MncdError

async def main(address, pin):
    card = await MyNumberCard.connect(address)
    try:
        await card.call("Authenticate", "aya{sv}", [b"x", {"pin": Variant("s", pin)}], timeout=30)
    except MncdError as exc:
        return exc.dbus_name()
    except BusError as exc:
        return exc.name
    except Exception:
        return "bus"
    finally:
        await card.close()
    return "accepted"

print(asyncio.run(main(sys.argv[1], bytes.fromhex(sys.argv[2]).decode())))
"""

AUTH_PINS = [
    "", "1", "123", "12345", "123456789012", "abcd", "ABCD", "12a4", " 123", "123 ", "12 3",
    "1234\n", "\t123", "+123", "-123", "12.3", "1e10", "０１２３", "١٢٣٤", "१२३४", "ⅠⅡⅢⅣ", "½234",
    "12³4", "۱۲۳۴", "73９5", "7\u200b395", "7395\u00a0", "7395" * 1000, "9" * 300000,
    "𝟕𝟑𝟗𝟓", "7395\u0301",
]  # fmt: skip
SIGN_PASSWORDS = [
    "", "A1", "ABC12", "QZ7XK", "Q" + "7" * 16, "QZ7XK93WQZ7XK93WQ", "qz7xk93w", "Qz7xk93w",
    "QZ7XK93w", "12345678", "73951234", "QZXKWABC", "ABCDEF", "QZ7XK93W ", " QZ7XK93W",
    "QZ7-XK93W", "QZ7_XK93W", "QZ7XK93W\n", "ＱＺ７ＸＫ９３Ｗ", "QZ7XK93Ｗ", "ÄZ7XK93W", "ΑΒΓ123",
    "QZ7XK93W" * 200, "QZ7XK\u200b93W", "ǪZ7XK93W", "QZ7XK93W\u0300", "ＡＢＣ１２３",
]  # fmt: skip
CARD_INFO_PINS = ["", "648", "64820", "abcd", "６４８２", "6482 ", "٦٤٨٢"]


def test_malformed_pins_never_reach_the_card(stack, r):
    for value in AUTH_PINS:
        r.call(f"auth pin {value[:12]!r}", "Authenticate", "aya{sv}", [b"x", pin(value)],
               PIN_FORMAT)  # fmt: skip
    for value in SIGN_PASSWORDS:
        r.call(f"sign password {value[:12]!r}", "Sign", "aysa{sv}",
               [b"x", "sha256", pin(value)], PIN_FORMAT)  # fmt: skip
    for value in CARD_INFO_PINS:
        r.call(f"card-info pin {value[:12]!r}", "CheckPersonalData", "a{sv}", [pin(value)],
               PIN_FORMAT)  # fmt: skip
    # A valid card-info PIN with a malformed signing password: neither is sent.
    options = {"pin": Variant("s", SECRET_CARD["card_info_pin"]), "sign-pin": Variant("s", "abc")}
    r.call("check sign-pin", "CheckPersonalData", "a{sv}", [options], PIN_FORMAT)
    # NUL bytes: D-Bus strings cannot hold them and the bus drops such a sender. That is sent
    # from a child process: the dropped connection upsets CPython 3.11's parser state in the
    # sending process (dbus-next's EOFError), which would break pytest's later imports.
    for value in ("73\x0095", "7395\x00", "\x00\x00\x00\x00", "QZ7XK93W\x00"):
        outcome = subprocess.run(
            [sys.executable, "-c", NUL_SENDER, stack.address, value.encode().hex()],
            capture_output=True, text=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        sent = r.commands()
        faultstats.bad_input(untouched=outcome in ("bus", INVALID, PIN_FORMAT) and not sent)
        if outcome not in ("bus", INVALID, PIN_FORMAT) or sent:
            r.failures.append(f"NUL in {value!r}: {outcome!r}, APDUs {sent[:3]}")
    r.check()
    # Still the same card, every try left, and the right PIN works at once.
    assert r.control.tries(CARD) == {"card_info": 3, "auth": 3, "sign": 5}
    authenticate(stack.address, SECRET_CARD["auth_pin"])


def test_data_limit_is_exactly_one_mib(stack):
    """1 MiB is accepted (and signed); one byte more is refused before the card."""
    data = bytes(range(256)) * (MAX_DATA // 256)

    async def run() -> Reply | None:
        return await raw_call(stack.address, "Authenticate", "aya{sv}",
                              [data, pin(SECRET_CARD["auth_pin"])])  # fmt: skip

    reply = asyncio.run(run())
    assert reply is not None and reply.error is None, reply
    signature, certificate = reply.body
    verify_rsa(certificate, signature, data)
