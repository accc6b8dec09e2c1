"""Hosts virtual cards in vpcd slots and takes orders over a control socket.

The control protocol is one JSON object per line, answered by one JSON object per line:
``{"cmd": "insert", "slot": 0, "card": "a", "profile": {...}}`` → ``{"ok": true, ...}``.
Tests, benchmarks and the demo use it through :class:`mncd.vcard.control.CardControl`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import pki
from .card import VirtualCard
from .profile import CardProfile, stable_manufacture_number
from .vpcd import VPCD_PORT, VpcdLink

log = logging.getLogger(__name__)


class CardHost:
    """Named virtual cards, and which vpcd slot each is inserted in."""

    def __init__(self, host: str = "127.0.0.1", base_port: int = VPCD_PORT) -> None:
        self.host = host
        self.base_port = base_port
        self.cards: dict[str, VirtualCard] = {}
        self.links: dict[int, VpcdLink] = {}
        self._pki: dict[str, pki.CardPki] = {}
        self._lock = threading.RLock()
        self.extra_commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    def card(self, name: str, profile: CardProfile | None = None) -> VirtualCard:
        """The card called ``name``; a new one when ``profile`` is given."""
        with self._lock:
            if profile is None:
                if name not in self.cards:
                    raise KeyError(f"no card named {name!r}; give a profile")
                return self.cards[name]
            if not profile.manufacture_number:
                # The same physical card whatever its certificates: a renewal keeps the number.
                profile = dataclasses.replace(
                    profile, manufacture_number=stable_manufacture_number(name)
                )
            key = profile.pki_key()
            if key not in self._pki:
                self._pki[key] = pki.generate(profile)
            self.cards[name] = VirtualCard(profile, self._pki[key])
            return self.cards[name]

    def insert(self, slot: int, card: VirtualCard, pull_on: bytes | None = None) -> None:
        """Insert ``card`` into ``slot``; ``pull_on``: remove it again on such a command."""
        with self._lock:
            self.remove(slot)
            link = VpcdLink(card, self.host, self.base_port + slot)
            link.pull_on = pull_on
            link.insert()
            self.links[slot] = link

    def remove(self, slot: int) -> bool:
        with self._lock:
            link = self.links.pop(slot, None)
        if link is None:
            return False
        link.remove()
        return True

    def remove_all(self) -> None:
        for slot in list(self.links):
            self.remove(slot)

    # -- control commands ------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        slot = int(request.get("slot", 0))
        name = str(request.get("card", "default"))
        if cmd == "ping":
            return {}
        if cmd == "insert":
            profile = request.get("profile")
            card = self.card(name, CardProfile.from_dict(profile) if profile is not None else None)
            pull_on = request.get("pull_on")
            self.insert(slot, card, bytes.fromhex(pull_on) if pull_on else None)
            return {"atr": card.atr.hex().upper()}
        if cmd == "remove":
            return {"removed": self.remove(slot)}
        if cmd == "log":
            card = self.card(name)
            entries = [
                {"command": e.command, "response": e.response, "time": e.time} for e in card.log
            ]
            if request.get("clear"):
                card.log.clear()
            return {"log": entries}
        if cmd == "state":
            card = self.card(name)
            link = next(
                (s for s, ln in self.links.items() if ln.card is card and ln.inserted), None
            )
            return {"tries": card.tries_left(), "slot": link, "atr": card.atr.hex().upper()}
        if cmd == "certificates":
            card = self.card(name)
            return {
                "auth": card.pki.auth_certificate.hex(),
                "auth-ca": card.pki.auth_ca_certificate.hex(),
                "sign": card.pki.sign_certificate.hex(),
                "sign-ca": card.pki.sign_ca_certificate.hex(),
            }
        if cmd == "update":
            card = self.card(name)
            card.update_card_data([str(item) for item in request.get("settings", [])])
            return {}
        if cmd == "renew-sign":
            card = self.card(name)
            card.replace_pki(pki.renew_signing_certificate(card.profile, card.pki))
            return {}
        if cmd == "reset-pin":
            self.card(name).reset_pin(str(request["pin"]))
            return {}
        if cmd == "pull-on":
            link = self.links.get(slot)
            if link is None:
                raise KeyError(f"no card in slot {slot}")
            link.pull_on = bytes.fromhex(request["prefix"])
            return {}
        if cmd in self.extra_commands:
            return self.extra_commands[cmd](request)
        raise ValueError(f"unknown command {cmd!r}")

    def serve_control(self, path: Path, ready: Callable[[], None] | None = None) -> None:
        """Answer control requests on a unix socket until the process ends."""
        if path.exists():
            path.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(8)
        if ready:
            ready()
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                try:
                    reply = {"ok": True, **self.handle(json.loads(line))}
                except Exception as exc:  # report every failure to the controller
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()
