"""``mncctl watch``: the daemon's signals and property changes as they happen."""

from __future__ import annotations

import argparse
import datetime as dt

from mncd.cli.errors import ExitCode
from mncd.cli.output import format_event
from mncd.cli.session import session
from mncd.client import BusUnavailable, Event


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser("watch", help="print the daemon's signals until Ctrl-C")
    command.add_argument("--json", action="store_true", help="one JSON object per line")
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def emit(event: Event) -> None:
        now = dt.datetime.now().astimezone()
        print(format_event(now, event, as_json=args.json), flush=True)

    try:
        with session() as (call, card):

            async def watch() -> None:
                await card.subscribe(emit)
                status = await card.get_status()
                emit(Event("Status", {"state": status.state, "readers": list(status.readers)}))
                await card.wait_closed()
                raise BusUnavailable("lost the connection to the session bus")

            call(watch())
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK  # pragma: no cover (watch only ends by Ctrl-C or an error)
