"""Card operations: Sign / Authenticate against raw PC/SC and OpenSC, APDU counts, insertion."""

from __future__ import annotations

import asyncio
import glob
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from mncd.card.jpki import AUTH_KEY, SIGN_KEY
from mncd.card.pcsc import PcscContext

from . import raw
from .stack import READERS, CardSpeed, SignalWatch, Stack
from .stats import Row, summary

AUTH_PIN, SIGN_PIN = raw.PINS["auth"], raw.PINS["sign"]
OPENSC_TOKENS = {
    "auth": ("JPKI (User Authentication PIN)", AUTH_PIN, "01"),
    "sign": ("JPKI (Digital Signature PIN)", SIGN_PIN, "02"),
}
DATA = b"mncd benchmark: the document to sign"


def opensc_module() -> str:
    """OpenSC's PKCS#11 module (Debian package opensc)."""
    pattern = "/usr/lib/{}opensc-pkcs11.so"
    found = sorted(glob.glob(pattern.format("*/"))) + glob.glob(pattern.format(""))
    if not found:
        raise RuntimeError("OpenSC's PKCS#11 module is missing (Debian package opensc)")
    return found[0]


def p11_kit_client() -> str:
    """p11-kit's client module (Debian package p11-kit-modules): PKCS#11 through mncd."""
    found = sorted(glob.glob("/usr/lib/*/pkcs11/p11-kit-client.so"))
    if not found:
        raise RuntimeError("p11-kit-client.so is missing (Debian package p11-kit-modules)")
    return found[0]


@dataclass
class CardConfig:
    """Iterations for one card speed."""

    insertions: int
    signatures: int
    processes: int
    raw_reads: int


def ms(seconds: float) -> float:
    """Seconds as milliseconds."""
    return seconds * 1000


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    """Milliseconds ``fn`` took."""
    start = time.perf_counter()
    await fn()
    return ms(time.perf_counter() - start)


class CardBench:
    """Measures one inserted card speed against its baselines."""

    def __init__(self, stack: Stack, log: Callable[[str], None]) -> None:
        assert stack.client is not None, "start the stack first"
        self.stack = stack
        self.log = log
        self.context = PcscContext()
        self.reader = READERS[0]
        self.data_file = stack.dir / "data"
        self.data_file.write_bytes(DATA)
        self.inserted = SignalWatch(stack.client, "CardInserted")
        self.removed = SignalWatch(stack.client, "CardRemoved")
        self.apdus: dict[str, Any] = {}
        # A person inserts a card at any moment, not in step with pcscd's polling.
        self.random = random.Random(7)

    async def start(self) -> CardBench:
        """Subscribe to the daemon's insertion and removal signals."""
        await self.inserted.start()
        await self.removed.start()
        return self

    # -- operations ------------------------------------------------------------------------

    async def dbus_sign(self) -> None:
        assert self.stack.client is not None
        await self.stack.client.sign(DATA, "sha256", pin=SIGN_PIN)

    async def dbus_auth(self) -> None:
        assert self.stack.client is not None
        await self.stack.client.authenticate(os.urandom(32), pin=AUTH_PIN)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def raw_sign(self, first: bool = False) -> None:
        await self._in_thread(raw.signature, self.context, self.reader, SIGN_KEY, DATA, first)

    async def raw_first_sign(self) -> None:
        await self.raw_sign(first=True)

    async def raw_auth(self) -> None:
        await self._in_thread(raw.signature, self.context, self.reader, AUTH_KEY, os.urandom(32))

    async def raw_status(self) -> None:
        await self._in_thread(raw.status_read, self.context, self.reader)

    async def process(self, args: list[str], stdin: bytes = b"") -> None:
        """Run a whole client process to completion (it must succeed)."""
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=self.stack.child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err.decode()[-400:]}")

    def pkcs11_args(self, which: str) -> list[str]:
        label, pin, key_id = OPENSC_TOKENS[which]
        return [
            "pkcs11-tool", "--module", opensc_module(), "--token-label", label, "--login",
            "--pin", pin, "--sign", "--mechanism", "SHA256-RSA-PKCS", "--id", key_id,
            "-i", str(self.data_file), "-o", str(self.stack.dir / f"opensc-{which}.sig"),
        ]  # fmt: skip

    async def pkcs11_auth(self) -> None:
        await self.process(self.pkcs11_args("auth"))

    def mncd_pkcs11_args(self, which: str) -> list[str]:
        """The same pkcs11-tool command through mncd (Debian's p11-kit-client.so)."""
        args = self.pkcs11_args(which)
        args[args.index(opensc_module())] = p11_kit_client()
        args[args.index("-o") + 1] = str(self.stack.dir / f"mncd-pkcs11-{which}.sig")
        return args

    async def mncd_pkcs11_auth(self) -> None:
        await self.process(self.mncd_pkcs11_args("auth"))

    async def mncctl_auth(self) -> None:
        mncctl = str(Path(sys.executable).with_name("mncctl"))
        await self.process([mncctl, "auth", "--pin-stdin"], f"{AUTH_PIN}\n".encode())

    # -- helpers ---------------------------------------------------------------------------

    @property
    def card(self) -> str:
        """Name of the card in the first reader."""
        return self.stack.inserted[0]

    async def commands(self, fn: Callable[[], Awaitable[Any]]) -> list[str]:
        """Headers (CLA INS P1 P2) of the APDUs the card answered during ``fn``."""
        await self.stack.card_commands(self.card, clear=True)
        await fn()
        return [c[:8] for c in await self.stack.card_commands(self.card, clear=True)]

    async def pairs(
        self, runs: int, a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]
    ) -> tuple[list[float], list[float]]:
        """``runs`` timings of each, alternating A B A B … after one warm-up of each."""
        await a()
        await b()
        times_a: list[float] = []
        times_b: list[float] = []
        for _ in range(runs):
            times_a.append(await timed(a))
            times_b.append(await timed(b))
        return times_a, times_b

    async def insert_cycle(self, speed: CardSpeed) -> dict[str, Any]:
        """Remove and insert the card; times (ms after the insert order) and the first Sign."""
        if self.stack.inserted.get(0):
            gone = raw.PresenceWaiter(self.reader, present=False)
            removed = self.removed.count
            await self.stack.remove(0)
            await self._in_thread(gone.wait)
            await self.removed.after(removed)
        await asyncio.sleep(self.random.uniform(0.05, 0.5))
        pcscd = raw.PresenceWaiter(self.reader, present=True)
        inserted = self.inserted.count
        start = time.perf_counter()
        await self.stack.insert(speed, 0)
        signal_at = await self.inserted.after(inserted)
        pcscd_at = await self._in_thread(pcscd.wait)
        status_apdus = await self.stack.card_commands(self.card, clear=True)
        first_sign = await timed(self.dbus_sign)
        first_sign_apdus = await self.stack.card_commands(self.card, clear=True)
        return {
            "signal": ms(signal_at - start),
            "pcscd": ms(pcscd_at - start),
            "status_apdus": [c[:8] for c in status_apdus],
            "first_sign": first_sign,
            "first_sign_apdus": [c[:8] for c in first_sign_apdus],
        }

    # -- the measurements ------------------------------------------------------------------

    async def measure(self, speed: CardSpeed, config: CardConfig, counts: bool) -> list[Row]:
        """Every card row for ``speed``; APDU counts too when ``counts``."""
        rows: list[Row] = []
        card = speed.name
        cycles = []
        for _ in range(config.insertions):
            cycles.append(await self.insert_cycle(speed))
        self.log(f"[{card}] insertions: {[round(c['signal'], 1) for c in cycles]} ms")
        raw_reads = [await timed(self.raw_status) for _ in range(config.raw_reads)]
        raw_first = [await timed(self.raw_first_sign) for _ in range(config.raw_reads)]
        signal = [c["signal"] for c in cycles]
        pcscd = [c["pcscd"] for c in cycles]
        after = [c["signal"] - c["pcscd"] for c in cycles]
        first = [c["first_sign"] for c in cycles]
        rows.append(
            Row("insertion", "card insertion → CardInserted", card, "ms", median(signal),
                median(pcscd), "pcscd reports the card", note="includes the daemon's card read",
                samples={"mncd": summary(signal), "baseline": summary(pcscd),
                         "signal_after_pcscd": summary(after)})
        )  # fmt: skip
        rows.append(
            Row("insertion", "card insertion → CardInserted", card, "ms", median(signal),
                median(pcscd) + median(raw_reads), "pcscd report + raw minimal read",
                samples={"raw_read": summary(raw_reads)})
        )  # fmt: skip
        rows.append(
            Row("sign", "Sign, first after insertion (reads the certificate)", card, "ms",
                median(first), median(raw_first), "raw VERIFY+READ cert+SIGN",
                samples={"mncd": summary(first), "baseline": summary(raw_first)})
        )  # fmt: skip

        sign, raw_sign = await self.pairs(config.signatures, self.dbus_sign, self.raw_sign)
        auth, raw_auth = await self.pairs(config.signatures, self.dbus_auth, self.raw_auth)
        self.log(f"[{card}] Sign {median(sign):.1f} ms (raw {median(raw_sign):.1f}), "
                 f"Authenticate {median(auth):.1f} ms (raw {median(raw_auth):.1f})")  # fmt: skip
        for name, mine, base in (("Sign", sign, raw_sign), ("Authenticate", auth, raw_auth)):
            rows.append(
                Row("sign", f"{name} over D-Bus, steady state", card, "ms", median(mine),
                    median(base), "raw pyscard, 5 APDUs", 1.2,
                    note="repeated calls: the signing certificate is already known",
                    samples={"mncd": summary(mine), "baseline": summary(base)})
            )  # fmt: skip

        mncctl, opensc = await self.pairs(config.processes, self.mncctl_auth, self.pkcs11_auth)
        self.log(f"[{card}] mncctl auth {median(mncctl):.1f} ms, "
                 f"pkcs11-tool --sign {median(opensc):.1f} ms")  # fmt: skip
        rows.append(
            Row("opensc", "mncctl auth --pin-stdin (whole process)", card, "ms", median(mncctl),
                median(opensc), "pkcs11-tool --sign (whole process)", 1 / 3, direction="le",
                note="like with like: a process per signature; target: mncd ≥ 3× faster",
                samples={"mncd": summary(mncctl), "baseline": summary(opensc)})
        )  # fmt: skip
        through, direct = await self.pairs(
            config.processes, self.mncd_pkcs11_auth, self.pkcs11_auth
        )
        self.log(f"[{card}] pkcs11-tool --sign through mncd {median(through):.1f} ms, "
                 f"with OpenSC's module {median(direct):.1f} ms")  # fmt: skip
        rows.append(
            Row("opensc", "pkcs11-tool --sign through mncd (p11-kit-client.so)", card, "ms",
                median(through), median(direct), "pkcs11-tool --sign with OpenSC's module",
                1 / 3, direction="le",
                note="the same program, login and signature; only the module differs; "
                "target: mncd ≥ 3× faster",
                samples={"mncd": summary(through), "baseline": summary(direct)})
        )  # fmt: skip
        rows.append(
            Row("opensc", "Authenticate D-Bus call alone", card, "ms", median(auth),
                median(opensc), "pkcs11-tool --sign (whole process)", 1 / 3, direction="le",
                note="what an application already running pays, vs a process per signature")
        )  # fmt: skip

        if counts:
            rows += await self.apdu_rows(cycles)
        tries = await self._in_thread(self.stack.sandbox.control.tries, self.card)
        if tries.get("auth") != 3 or tries.get("sign") != 5:
            raise RuntimeError(f"a PIN counter is no longer full: {tries}")
        return rows

    async def apdu_rows(self, cycles: list[dict[str, Any]]) -> list[Row]:
        """APDUs per operation: mncd against the raw minimum and against OpenSC."""
        listed = {
            "mncd status": cycles[0]["status_apdus"],
            "mncd first Sign": cycles[0]["first_sign_apdus"],
            "mncd Sign": await self.commands(self.dbus_sign),
            "mncd Authenticate": await self.commands(self.dbus_auth),
            "mncctl auth": await self.commands(self.mncctl_auth),
            "raw status": await self.commands(self.raw_status),
            "raw first Sign": await self.commands(self.raw_first_sign),
            "raw Sign": await self.commands(self.raw_sign),
            "raw Authenticate": await self.commands(self.raw_auth),
            "OpenSC status": await self.commands(
                lambda: self.process(["pkcs15-tool", "--list-certificates", "--list-pins"])
            ),
            "OpenSC Sign": await self.commands(lambda: self.process(self.pkcs11_args("sign"))),
            "OpenSC Authenticate": await self.commands(self.pkcs11_auth),
            "mncd PKCS#11 Authenticate": await self.commands(self.mncd_pkcs11_auth),
        }
        n = {name: len(headers) for name, headers in listed.items()}
        self.apdus = {"counts": n, "headers": listed}
        self.log(f"APDUs: {n}")
        return [
            Row("apdus", "APDUs: status read on insertion", "", "APDUs", n["mncd status"],
                n["raw status"], "raw minimum (same data)"),
            Row("apdus", "APDUs: Sign, first after insertion", "", "APDUs", n["mncd first Sign"],
                n["raw first Sign"], "raw minimum (+ certificate)"),
            Row("apdus", "APDUs: Sign, steady state", "", "APDUs", n["mncd Sign"],
                n["raw Sign"], "raw minimum", 1.0),
            Row("apdus", "APDUs: Authenticate", "", "APDUs", n["mncd Authenticate"],
                n["raw Authenticate"], "raw minimum", 1.0),
            Row("apdus", "APDUs: mncctl auth (whole process)", "", "APDUs", n["mncctl auth"],
                n["raw Authenticate"], "raw minimum", 1.0),
            Row("apdus", "APDUs: status read on insertion", "", "APDUs", n["mncd status"],
                n["OpenSC status"], "pkcs15-tool --list-certificates --list-pins"),
            Row("apdus", "APDUs: Sign, steady state", "", "APDUs", n["mncd Sign"],
                n["OpenSC Sign"], "pkcs11-tool --sign (sign key)"),
            Row("apdus", "APDUs: Authenticate", "", "APDUs", n["mncd Authenticate"],
                n["OpenSC Authenticate"], "pkcs11-tool --sign (auth key)"),
            Row("apdus", "APDUs: pkcs11-tool --sign through mncd (login + C_Sign)", "",
                "APDUs", n["mncd PKCS#11 Authenticate"], n["OpenSC Authenticate"],
                "pkcs11-tool --sign with OpenSC's module"),
        ]  # fmt: skip

    def close(self) -> None:
        self.context.release()
