"""``mncctl forget CARD``: remove a card you no longer have, with its reminders."""

from __future__ import annotations

import argparse

from mncd.cli.errors import ExitCode
from mncd.cli.session import session
from mncd.cli.text import _, subcommand


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub,
        "forget",
        _("forget a card you no longer have (its cached certificates and reminders)"),
        _("Remove a card from mncd's cache, and with it every reminder about it. CARD is a card "
          "id as 'mncctl status' lists it, or its first 8 or more digits. A card in a reader is "
          "not forgotten. Needs no PIN."),
        "mncctl forget 0123456789abcdef",
    )  # fmt: skip
    command.add_argument("card", metavar="CARD", help=_("the card id (see mncctl status)"))
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with session() as (call, card):
        card_id = call(card.forget_card(args.card.strip().lower()))
    print(_("Forgot card {card}: its certificates and reminders are removed.").format(card=card_id))
    return ExitCode.OK
