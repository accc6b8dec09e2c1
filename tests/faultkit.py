"""Shared pieces of the fault suite: the daemon on a private bus, dbus-next clients, the card's
APDU log read as operations, cache checks, and the distinctive secrets the suite greps for."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from busstack import (
    CallError,
    Daemon,
    PrivateBus,
    gdbus_call,
    gvariant_bytes,
    parse_gvariant_arrays,
    status,
    wait_for,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mncd.card.cardinfo import CARD_INFO_AID, INDIVIDUAL_NUMBER_FID
from mncd.card.jpki import JPKI_AID
from mncd.client import MyNumberCard
from mncd.core.cache import CardCache

ERR = "io.github.mncd.MyNumberCard1.Error."

SELECT_JPKI = "00A4040C0A" + JPKI_AID.hex().upper()
SELECT_CARD_INFO = "00A4040C0A" + CARD_INFO_AID.hex().upper()
VERIFY = "00200080"
SIGN = "802A"
READ_BINARY = "00B0"


def select_ef(fid: int) -> str:
    return f"00A4020C02{fid:04X}"


#: The APDUs of one Authenticate, in order: SELECT AP, SELECT PIN EF, the live counter (an empty
#: VERIFY, inside the same transaction), VERIFY, SELECT key, SIGN.
AUTHENTICATE_APDUS = (
    SELECT_JPKI, select_ef(0x0018), "VERIFY-EMPTY", VERIFY, select_ef(0x0017), SIGN,
)  # fmt: skip

#: A card whose secrets appear nowhere else, so a grep for them cannot match by chance.
SECRET_CARD = {
    "auth_pin": "7395",
    "sign_password": "QZ7XK93W",
    "card_info_pin": "6482",
    "name": "秘匿\u3000試験之介",
    "address": "架空県幻影市霞町九丁目八番七号QXADDR5501",
    "birth_date": "1977-07-17",
    "sex": "1",
    "manufacture_number": "QM4K7Z9X2R5T1",  # names the physical card: kept only as a hash
}
#: Strings that must never appear in a log line, an error text or a cache file.
SECRET_STRINGS = (
    SECRET_CARD["manufacture_number"],
    SECRET_CARD["sign_password"],
    SECRET_CARD["name"],
    "試験之介",
    SECRET_CARD["address"],
    "QXADDR5501",
    "霞町九丁目",
)


# -- the APDU log ---------------------------------------------------------------------------


def is_verify_with_pin(command: str) -> bool:
    """A VERIFY that carries a PIN (the log masks its bytes); an empty one only asks tries."""
    return command.startswith(VERIFY) and len(command) > len(VERIFY)


def verifies_with_pin(commands: list[str]) -> int:
    return sum(is_verify_with_pin(c) for c in commands)


def kind(command: str) -> str:
    """The pattern an APDU matches in :data:`AUTHENTICATE_APDUS` terms."""
    if command.startswith(VERIFY):
        return VERIFY if len(command) > len(VERIFY) else "VERIFY-EMPTY"
    if command.startswith(SIGN):
        return SIGN
    return command


def operations(commands: list[str]) -> list[tuple[str, ...]]:
    """The log cut at every SELECT of an application: one piece per card session."""
    pieces: list[list[str]] = []
    for command in commands:
        if command.startswith("00A4040C") or not pieces:
            pieces.append([])
        pieces[-1].append(kind(command))
    return [tuple(p) for p in pieces]


def individual_number_selected(commands: list[str]) -> bool:
    """Whether EF 0001 of the card-info AP (the individual number) was ever selected."""
    application = ""
    for command in commands:
        if command.startswith("00A4040C"):
            application = command
        elif command == select_ef(INDIVIDUAL_NUMBER_FID) and application == SELECT_CARD_INFO:
            return True
    return False


# -- the daemon and its callers -------------------------------------------------------------


class Stack:
    """A private session bus with mncd on it, for one test."""

    def __init__(self, directory: Path, env: dict[str, str], state_dir: Path | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.bus = PrivateBus(directory)
        self.daemon = Daemon(self.bus, env, state_dir or directory / "state")

    @property
    def address(self) -> str:
        return self.bus.address

    @property
    def cache_dir(self) -> Path:
        return self.daemon.state_dir / "mncd" / "cards"

    def start(
        self, extra_env: dict[str, str] | None = None, wrapper: list[str] | None = None
    ) -> Stack:
        """Start mncd; the bus is stopped again if mncd does not come up."""
        try:
            self.daemon.start(extra_env, wrapper)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.bus.stop()

    def wait_state(self, state: str, timeout: float = 20.0) -> dict[str, Any]:
        """GetStatus once it reports ``state`` (card-present: once the card has been read)."""

        def reached() -> dict[str, Any] | None:
            s = status(self.address)
            if s["state"] != state:
                return None
            if state == "card-present" and s["auth"]["source"] != "card":
                return None
            return s

        return wait_for(reached, f"state {state}", timeout)


async def properties(address: str) -> dict[str, Any]:
    """mncd's D-Bus properties, read through org.freedesktop.DBus.Properties.GetAll."""
    async with await MyNumberCard.connect(address) as card:
        return await card.get_properties()


def dbus_properties(address: str) -> dict[str, Any]:
    return asyncio.run(properties(address))


def verify_rsa(cert_der: bytes, signature: bytes, data: bytes, algorithm: Any = None) -> None:
    """Raise unless ``signature`` is a PKCS#1 v1.5 signature of ``data`` by the certificate."""
    key = x509.load_der_x509_certificate(cert_der).public_key()
    key.verify(signature, data, padding.PKCS1v15(), algorithm or hashes.SHA256())


# -- the cache ------------------------------------------------------------------------------


def check_cache(cards_dir: Path) -> list[str]:
    """Every card file in the cache loads, is private and whole; returns their names."""
    if not cards_dir.exists():
        return []
    assert stat.S_IMODE(cards_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cards_dir.parent.stat().st_mode) == 0o700
    names = []
    for path in sorted(cards_dir.iterdir()):
        assert not path.name.startswith("."), f"half-written temporary file left: {path.name}"
        if path.suffix != ".json":
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        json.loads(path.read_text())  # whole JSON, not a torn write
        assert CardCache(cards_dir.parent).load(path.stem) is not None, path.name
        names.append(path.name)
    return names


def files_under(root: Path) -> Iterator[Path]:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                yield path


# -- calls through gdbus, remembering every error text for the secrets scan ----------------

#: Every error text a caller of the fault suite received (scanned for secrets at the end).
ERROR_TEXTS: list[str] = []


def call(address: str, method: str, *args: str, timeout: int = 60) -> str:
    """gdbus call; error texts are kept for the secrets scan before CallError is raised."""
    try:
        return gdbus_call(address, method, *args, timeout=timeout)
    except CallError as exc:
        ERROR_TEXTS.append(exc.message)
        raise


def authenticate(address: str, pin: str, data: bytes = b"challenge") -> tuple[bytes, bytes]:
    """Authenticate with ``pin``; the signature is checked before it is returned."""
    output = call(address, "Authenticate", gvariant_bytes(data), f"{{'pin': <'{pin}'>}}")
    signature, certificate = parse_gvariant_arrays(output)
    verify_rsa(certificate, signature, data)
    return signature, certificate


def sign(address: str, password: str, data: bytes = b"document") -> tuple[bytes, bytes]:
    """Sign with ``password`` (SHA-256); the signature is checked before it is returned."""
    output = call(address, "Sign", gvariant_bytes(data), "sha256", f"{{'pin': <'{password}'>}}")
    signature, certificate = parse_gvariant_arrays(output)
    verify_rsa(certificate, signature, data)
    return signature, certificate
