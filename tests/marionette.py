"""A small client of Firefox's Marionette protocol (``firefox --marionette``): navigate and read
the page, as a test driving a real Firefox needs. Messages are ``LENGTH:JSON``; a command is
``[0, id, name, parameters]``, its answer ``[1, id, error, result]``."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
from typing import Any


class MarionetteError(Exception):
    """Firefox answered a command with an error (``error``: its WebDriver error code)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class Marionette:
    def __init__(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._ids = itertools.count(1)
        self._buffer = b""
        hello = self._receive()
        assert hello.get("applicationType") == "gecko", hello
        self.call("WebDriver:NewSession", {"capabilities": {"acceptInsecureCerts": False}})

    def _receive(self) -> Any:
        while b":" not in self._buffer:
            self._read()
        length, self._buffer = self._buffer.split(b":", 1)
        while len(self._buffer) < int(length):
            self._read()
        body, self._buffer = self._buffer[: int(length)], self._buffer[int(length) :]
        return json.loads(body)

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Firefox closed Marionette's connection")
        self._buffer += chunk

    def call(self, name: str, parameters: dict[str, Any] | None = None) -> Any:
        message_id = next(self._ids)
        body = json.dumps([0, message_id, name, parameters or {}]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            kind, answered, error, result = self._receive()
            if kind == 1 and answered == message_id:
                break
        if error:
            raise MarionetteError(error.get("error", "?"), error.get("message", ""))
        return result

    def navigate(self, url: str) -> None:
        self.call("WebDriver:Navigate", {"url": url})

    def text(self) -> str:
        """The page's text as a person reads it."""
        script = "return document.body ? document.body.innerText : ''"
        return self.call("WebDriver:ExecuteScript", {"script": script, "args": []})["value"]

    def quit(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.call("Marionette:Quit", {"flags": ["eForceQuit"]})
        self.sock.close()
