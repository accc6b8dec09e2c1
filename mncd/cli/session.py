"""A connection to the daemon for one command, with synchronous steps (a PIN prompt) between
its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from mncd.client import MyNumberCard

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


@contextmanager
def session() -> Iterator[tuple[Run[Any], MyNumberCard]]:
    """A connected client and a ``run(coroutine)`` for it.

    Synchronous code (the PIN prompt) runs between ``run`` calls, where Ctrl-C raises at once.
    """
    with asyncio.Runner() as runner:
        card = runner.run(MyNumberCard.connect())
        try:
            yield runner.run, card
        finally:
            with suppress(Exception, asyncio.CancelledError):
                runner.run(card.close())
