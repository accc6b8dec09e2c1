"""Asking the user for a PIN through a pinentry program (GnuPG's Assuan pinentry protocol).

The daemon, not the calling application, talks to the pinentry: the app never sees the PIN, and
the user sees which program asks for which certificate. Debian's ``pinentry-*`` programs are the
peers. The PIN comes back as a bytearray that the caller wipes after use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: GPG error codes (source pinentry) that mean the user said no.
_CANCELLED = {83886179, 83886194, 83886142}  # cancelled, not confirmed, timeout
#: Environment a graphical or terminal pinentry needs to find the user's display.
PASSED_ENV = (
    "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
    "GTK_IM_MODULE", "QT_IM_MODULE", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "PATH", "HOME",
    "TERM",
)  # fmt: skip
TIMEOUT_SECONDS = 120


class PinentryError(Exception):
    """The pinentry program is missing, crashed or spoke nonsense."""


class PinentryCancelled(Exception):
    """The user cancelled (or the dialog timed out)."""


def escape(text: str) -> str:
    """Percent-escape an Assuan argument (%, CR, LF and other control characters)."""
    return "".join(f"%{ord(c):02X}" if c == "%" or ord(c) < 0x20 else c for c in text)


def unescape(data: bytes) -> bytearray:
    """Decode a percent-escaped Assuan data line into a fresh bytearray."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return out


@dataclass
class Dialog:
    """What the dialog shows."""

    title: str
    description: str
    prompt: str
    ok: str = "OK"
    cancel: str = "Cancel"


class Pinentry:
    """One pinentry process for one conversation (several GETPINs, CONFIRMs)."""

    def __init__(self, program: str = "pinentry", tty: str | None = None) -> None:
        self.program = program
        self.tty = tty if tty is not None else os.environ.get("GPG_TTY")
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Pinentry:
        path = shutil.which(self.program)
        if path is None:
            raise PinentryError(f"the pinentry program {self.program!r} is not installed")
        env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
        try:
            self._process = await asyncio.create_subprocess_exec(
                path,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            raise PinentryError(f"cannot start {self.program}: {exc}") from exc
        await self._expect_ok()  # greeting
        if self.tty:
            await self.command(f"OPTION ttyname={self.tty}")
            await self.command(f"OPTION ttytype={os.environ.get('TERM', 'xterm')}")
        await self.command(f"SETTIMEOUT {TIMEOUT_SECONDS}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None and exc and exc[0] is not None:
            # Cancelled or failed: the dialog goes away now, not when the user answers it.
            process.kill()
            await process.wait()
        elif process.returncode is None:
            try:
                process.stdin.write(b"BYE\n")  # type: ignore[union-attr]
                await asyncio.wait_for(process.wait(), 5)
            except (OSError, TimeoutError):
                process.kill()
                await process.wait()

    async def _line(self) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        try:
            line = await self._process.stdout.readline()
        except (OSError, ValueError) as exc:
            raise PinentryError(f"pinentry failed: {exc}") from exc
        if not line:
            raise PinentryError("the pinentry program ended unexpectedly")
        return line.rstrip(b"\r\n")

    async def _expect_ok(
        self, data: bytearray | None = None, status: list[bytes] | None = None
    ) -> None:
        while True:
            line = await self._line()
            if line == b"OK" or line.startswith(b"OK "):
                return
            if line.startswith(b"D ") and data is not None:
                data += unescape(line[2:])
            elif line.startswith(b"S ") and status is not None:
                status.append(line[2:].split(b" ")[0])
            elif line.startswith(b"ERR "):
                code = int(line.split()[1]) if line.split()[1].isdigit() else 0
                if code in _CANCELLED:
                    raise PinentryCancelled()
                raise PinentryError("pinentry refused a command")
            elif line.startswith((b"S ", b"#", b"INQUIRE")):
                if line.startswith(b"INQUIRE"):
                    await self._send("END")
                continue
            else:
                raise PinentryError("pinentry answered something unexpected")

    async def _send(self, line: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(line.encode("utf-8") + b"\n")
        try:
            await self._process.stdin.drain()
        except (OSError, ConnectionError) as exc:
            raise PinentryError(f"pinentry failed: {exc}") from exc

    async def command(self, line: str) -> None:
        await self._send(line)
        await self._expect_ok()

    async def show(self, dialog: Dialog, error: str = "") -> None:
        await self.command(f"SETTITLE {escape(dialog.title)}")
        await self.command(f"SETDESC {escape(dialog.description)}")
        await self.command(f"SETPROMPT {escape(dialog.prompt)}")
        await self.command(f"SETOK {escape(dialog.ok)}")
        await self.command(f"SETCANCEL {escape(dialog.cancel)}")
        await self.command(f"SETERROR {escape(error)}" if error else "SETERROR")

    async def get_pin(self, dialog: Dialog, error: str = "") -> bytearray:
        """Ask for a PIN; raises PinentryCancelled when the user cancels."""
        await self.show(dialog, error)
        await self._send("GETPIN")
        pin = bytearray()
        await self._expect_ok(pin)
        return pin

    async def get_new_pin(
        self, dialog: Dialog, repeat_prompt: str, mismatch: str, error: str = ""
    ) -> tuple[bytearray, bool]:
        """Ask for a new PIN to be typed twice (SETREPEAT): the PIN, and whether the pinentry
        compared the two entries itself (``S PIN_REPEATED``); pinentries without SETREPEAT
        ask once, and the caller then asks again. Raises PinentryCancelled on cancel."""
        await self.show(dialog, error)
        try:
            await self.command(f"SETREPEAT {escape(repeat_prompt)}")
            await self.command(f"SETREPEATERROR {escape(mismatch)}")
        except PinentryError:
            log.debug("the pinentry does not ask twice itself (no SETREPEAT)")
        await self._send("GETPIN")
        pin = bytearray()
        status: list[bytes] = []
        await self._expect_ok(pin, status)
        return pin, b"PIN_REPEATED" in status

    async def confirm(self, dialog: Dialog) -> bool:
        """Ask a yes/no question; False when declined."""
        await self.show(dialog)
        await self._send("CONFIRM")
        try:
            await self._expect_ok()
        except PinentryCancelled:
            return False
        return True
