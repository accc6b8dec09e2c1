"""``mncctl watch``: the daemon's signals and property changes as they happen."""

from __future__ import annotations

import argparse
import datetime as dt

from mncd.cli.errors import ExitCode
from mncd.cli.output import event_lines, format_event
from mncd.cli.session import session
from mncd.cli.text import _, output_width, subcommand
from mncd.client import BusUnavailable, Event


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "watch", _("show what happens to the card and the certificates, until Ctrl-C"),
        _("Print what happens to the card, the readers and the certificates as it happens, in "
          "Japan's time, until Ctrl-C. Needs no PIN."),
        "mncctl watch", "mncctl watch --raw", "mncctl watch --json",
    )  # fmt: skip
    form = command.add_mutually_exclusive_group()
    form.add_argument(
        "--raw", action="store_true",
        help=_("the daemon's signals and property changes as they are, in local time"),
    )  # fmt: skip
    form.add_argument("--json", action="store_true", help=_("one JSON object per line"))
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    width = output_width()

    def emit(event: Event) -> None:
        now = dt.datetime.now().astimezone()
        if args.raw or args.json:
            print(format_event(now, event, as_json=args.json), flush=True)
        else:
            for line in event_lines(now, event, width):
                print(line, flush=True)

    try:
        with session() as (call, card):

            async def watch() -> None:
                await card.subscribe(emit)
                status = await card.get_status()
                emit(Event("Status", {"state": status.state, "readers": list(status.readers)}))
                await card.wait_closed()
                raise BusUnavailable(_("Lost the connection to the session bus."))

            call(watch())
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK  # pragma: no cover (watch only ends by Ctrl-C or an error)
