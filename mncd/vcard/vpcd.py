"""Connects a virtual card to pcscd's vpcd driver (vsmartcard's socket protocol).

Framing: a 2-byte big-endian length, then the payload. A 1-byte payload is a control message
(0 power off, 1 power on, 2 reset, 4 send the ATR); anything else is an APDU, answered with the
response APDU. Connecting the socket inserts the card, closing it removes the card.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading

from .card import VirtualCard

log = logging.getLogger(__name__)

VPCD_PORT = 35963
POWER_OFF, POWER_ON, RESET, GET_ATR = 0, 1, 2, 4


class VpcdLink:
    """One inserted card: a socket to vpcd and the thread answering on it."""

    def __init__(self, card: VirtualCard, host: str = "127.0.0.1", port: int = VPCD_PORT) -> None:
        self.card = card
        self.address = (host, port)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.pull_on: bytes | None = None  # remove the card when a command starts with this

    def insert(self, timeout: float = 10.0) -> None:
        """Connect to vpcd (the reader now sees a card)."""
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.settimeout(None)
        # vpcd writes length and body separately; without these every APDU waits ~40 ms for
        # a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.card.insert()
        self._thread = threading.Thread(target=self._serve, name="vpcd-link", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        """Close the socket (the reader now sees no card)."""
        self._closing.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            buf += chunk
        return bytes(buf)

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while not self._closing.is_set():
                (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
                payload = self._recv_exact(sock, length)
                if length == 1:
                    reply = self._control(payload[0])
                else:
                    if self.pull_on is not None and payload.startswith(self.pull_on):
                        log.info("pulling the card on command %s", payload[:4].hex())
                        self.pull_on = None
                        self._sock = None
                        sock.close()
                        return
                    reply = self.card.process(payload)
                if reply is not None:
                    sock.sendall(struct.pack(">H", len(reply)) + reply)
        except (OSError, ConnectionError) as exc:
            if not self._closing.is_set():
                log.info("vpcd link ended: %s", exc)
            self._sock = None

    def _control(self, code: int) -> bytes | None:
        if code == GET_ATR:
            return self.card.atr
        if code in (POWER_OFF, POWER_ON, RESET):
            self.card.reset()
        return None
