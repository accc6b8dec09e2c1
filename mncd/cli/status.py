"""``mncctl status``: the card, the reader and both certificates."""

from __future__ import annotations

import argparse

from mncd.cli.errors import ExitCode
from mncd.cli.output import format_status, status_json
from mncd.cli.session import session


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser("status", help="show the card, reader and certificate status")
    command.add_argument("--json", action="store_true", help="print the status as JSON")
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with session() as (call, card):
        status = call(card.get_status())
    print(status_json(status) if args.json else format_status(status))
    return ExitCode.OK
