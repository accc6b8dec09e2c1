"""``mncctl forget CARD``: remove a card you no longer have, with its reminders."""

from __future__ import annotations

import argparse

from mncd.cli.errors import ExitCode
from mncd.cli.session import session


def register(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "forget",
        help="forget a card you no longer have (its cached certificates and reminders)",
        description="Remove a card from mncd's cache, and with it every reminder about it. "
        "CARD is a card id as 'mncctl status' lists it, or its first 8 or more digits. "
        "A card in a reader is not forgotten.",
    )
    command.add_argument("card", metavar="CARD", help="the card id (see mncctl status)")
    command.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with session() as (call, card):
        card_id = call(card.forget_card(args.card.strip().lower()))
    print(f"forgot card {card_id}: its certificates and reminders are removed "
          "(カードの情報を削除しました)")  # fmt: skip
    return ExitCode.OK
