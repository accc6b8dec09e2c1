"""``mncctl status``: the card, the reader and both certificates."""

from __future__ import annotations

import argparse

from mncd.cli.errors import ExitCode
from mncd.cli.output import format_status, status_json
from mncd.cli.session import STATUS_WAIT, session, settled_status
from mncd.cli.text import _, output_width, subcommand


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "status", _("show the card, reader and certificate status"),
        _("Show the reader, the card and both certificates: their state, expiry and what to do "
          "next. Needs no PIN."),
        "mncctl status", "mncctl status --details", "mncctl status --json",
    )  # fmt: skip
    command.add_argument(
        "--details", action="store_true",
        help=_("also show the card's id, where each certificate was read, serials, issuers, "
               "fingerprints and the other cards seen"),
    )  # fmt: skip
    command.add_argument(
        "--json", action="store_true",
        help=_("print the status as JSON (values not known are null)"),
    )  # fmt: skip
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with session() as (call, card):
        # A card inserted a moment ago (or present when mncd started) is described once read.
        status = call(settled_status(card, STATUS_WAIT))
    if args.json:
        print(status_json(status))
    else:
        print(format_status(status, details=args.details, width=output_width()))
    return ExitCode.OK
