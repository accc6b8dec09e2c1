"""A connection to the daemon for one command, with synchronous steps (a PIN prompt) between
its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from mncd.client import MyNumberCard, Status

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
#: How long to wait for a card that was just inserted to be read before its status counts.
READ_WAIT = 10.0
#: ``mncctl status`` waits less: it describes a card still being read as such.
STATUS_WAIT = 3.0


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


def being_read(status: Status) -> bool:
    """Whether a card is in the reader but not read yet (its certificates are not known); an
    older daemon said card-present with the certificates not from the card."""
    return status.state == "reading" or (
        status.state == "card-present" and status.auth.source != "card"
    )


async def settled_status(card: MyNumberCard, wait: float = READ_WAIT) -> Status:
    """GetStatus, once a card that was just inserted has been read (or ``wait`` is over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    status = await card.get_status()
    while being_read(status) and loop.time() < deadline:
        await asyncio.sleep(0.1)
        status = await card.get_status()
    return status
