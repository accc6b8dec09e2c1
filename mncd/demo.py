"""Runs mncd's main job on the built-in virtual card, with no hardware.

Starts an isolated pcscd with the vpcd reader and a virtual My Number Card, a private session
bus and the mncd daemon on it; then, as any desktop application would, asks the daemon over
D-Bus for the card's status, an authentication signature and a document signature, verifies
both signatures against the returned certificates, and shows the status served from the cache
once the card is removed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mncd.api import BUS_NAME
from mncd.card.digestinfo import digest
from mncd.cli.output import format_status
from mncd.client import MyNumberCard, Status
from mncd.i18n import gettext as _
from mncd.jpki import signatures
from mncd.terminal import output_width
from mncd.vcard.profile import CardProfile
from mncd.vcard.sandbox import PcscSandbox
from mncd.vcard.sessionbus import PrivateSessionBus


def print_status(status: Status) -> None:
    """The status as ``mncctl status`` shows it, indented."""
    width = output_width()
    for line in format_status(status, width=width - 2 if width else None).splitlines():
        print(f"  {line}".rstrip())


async def _wait_for(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


async def client(address: str, sandbox: PcscSandbox, profile: CardProfile) -> int:
    async with await MyNumberCard.connect(address) as mncd:

        async def owned() -> bool:
            return bool(await mncd.call_bus("NameHasOwner", "s", [BUS_NAME]))

        await _wait_for(owned, "the daemon to own its bus name")

        async def status_when(state: str) -> Status | None:
            status = await mncd.get_status()
            read = status.auth.source == "card"
            ok = status.state == state and (state != "card-present" or read)
            return status if ok else None

        print(_("== The card is in. mncd's status, as 'mncctl status' shows it:"))
        print_status(await _wait_for(lambda: status_when("card-present"), "the card"))

        challenge = os.urandom(32)
        signed = await mncd.authenticate(challenge, pin=profile.auth_pin)
        signatures.verify(
            signed.certificate, signed.signature, "sha256", digest("sha256", challenge)
        )
        print(_("== Authenticate: a {n}-byte signature, verified against the "
                "user-authentication certificate.").format(n=len(signed.signature)))  # fmt: skip

        document = "mncd デモ文書 / demo document".encode()
        signed = await mncd.sign(document, "sha256", pin=profile.sign_password)
        signatures.verify(
            signed.certificate, signed.signature, "sha256", digest("sha256", document)
        )
        print(_("== Sign: a {n}-byte signature over a document, verified against the signing "
                "certificate.").format(n=len(signed.signature)))  # fmt: skip

        sandbox.control.remove()
        print(_("== The card is out. mncd still knows both certificates (from its cache):"))
        print_status(await _wait_for(lambda: status_when("no-card"), "the removal"))
    return 0


def main(argv: list[str] | None = None) -> int:
    from mncd.terminal import ArgumentParser

    parser = ArgumentParser(
        prog="mncd-demo",
        description=_("Runs mncd's main job on the built-in virtual card, with no hardware."),
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help=_("a setting of the virtual card (see 'mncd-vcard settings')"),
    )  # fmt: skip
    args = parser.parse_args(argv)
    profile = CardProfile().with_overrides(args.set)

    with tempfile.TemporaryDirectory(prefix="mncd-demo-") as tmp, PcscSandbox() as sandbox:
        workdir = Path(tmp)
        sandbox.control.insert(profile)
        with PrivateSessionBus(workdir) as bus:
            env = {
                **os.environ,
                **sandbox.env,
                "DBUS_SESSION_BUS_ADDRESS": bus.address,
                "XDG_STATE_HOME": str(workdir / "state"),
            }
            env.pop("NOTIFY_SOCKET", None)
            log_path = workdir / "mncd.log"
            print(_("A virtual My Number Card in a pcscd of the demo's own, and mncd on a private "
                    "session bus: nothing of your desktop is used or changed."))  # fmt: skip
            with log_path.open("wb") as log:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "mncd.daemon"], env=env, stderr=log
                )
            try:
                return asyncio.run(client(bus.address, sandbox, profile))
            except Exception as exc:
                print(_("The demo failed: {error}").format(error=exc), file=sys.stderr)
                print(log_path.read_text(errors="replace"), file=sys.stderr)
                return 1
            finally:
                daemon.terminate()
                daemon.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
