"""Client of the virtual-card host's control socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .profile import CardProfile


class ControlError(RuntimeError):
    """The card host refused or failed a command."""


class CardControl:
    """Insert, remove and inspect virtual cards in a running card host."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(self.path)
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                reply = json.loads(stream.readline())
        if not reply.pop("ok"):
            raise ControlError(reply.get("error", "failed"))
        return reply

    def insert(
        self,
        profile: CardProfile | None = None,
        slot: int = 0,
        card: str = "default",
        pull_on: str = "",
    ) -> str:
        """Insert ``card`` (a new one when ``profile`` is given) into ``slot``; returns its ATR.

        ``pull_on``: remove it again as soon as a command starting with this hex prefix arrives.
        """
        args: dict[str, Any] = {"slot": slot, "card": card}
        if pull_on:
            args["pull_on"] = pull_on
        if profile is not None:
            args["profile"] = profile.to_dict()
        return self.call("insert", **args)["atr"]

    def remove(self, slot: int = 0) -> bool:
        return self.call("remove", slot=slot)["removed"]

    def log(self, card: str = "default", clear: bool = False) -> list[dict[str, Any]]:
        """APDUs the card answered: ``command`` and ``response`` in upper-case hex."""
        return self.call("log", card=card, clear=clear)["log"]

    def commands(self, card: str = "default", clear: bool = False) -> list[str]:
        return [entry["command"] for entry in self.log(card, clear)]

    def tries(self, card: str = "default") -> dict[str, int]:
        return self.call("state", card=card)["tries"]

    def certificates(self, card: str = "default") -> dict[str, bytes]:
        return {k: bytes.fromhex(v) for k, v in self.call("certificates", card=card).items()}

    def renew_signing_certificate(self, card: str = "default") -> None:
        """The office issues a new signing certificate onto the card (the old one is revoked)."""
        self.call("renew-sign", card=card)

    def reset_pin(self, which: str, card: str = "default") -> None:
        """The municipal office resets a PIN (auth, sign, card_info): its counter is full again."""
        self.call("reset-pin", card=card, pin=which)

    def pull_on(self, prefix: str, slot: int = 0) -> None:
        """Remove the card from ``slot`` when it receives a command starting with ``prefix``."""
        self.call("pull-on", slot=slot, prefix=prefix)
