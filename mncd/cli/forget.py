"""``mncctl forget CARD``: remove a card you no longer have, with its reminders."""

from __future__ import annotations

import argparse

from mncd import errors
from mncd.api import CARD_ID_DIGITS, CARD_ID_MIN_DIGITS
from mncd.cli.errors import ExitCode, UsageError, local
from mncd.cli.pin_command import forget_change
from mncd.cli.session import session
from mncd.cli.text import _, subcommand
from mncd.client import Status


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
    wanted = args.card.strip().lower()
    shaped = CARD_ID_MIN_DIGITS <= len(wanted) <= CARD_ID_DIGITS
    if not shaped or any(c not in "0123456789abcdef" for c in wanted):
        raise UsageError(
            _("A card id is {min} to 32 digits of 0-9 and a-f, as 'mncctl status' lists it.")
            .format(min=CARD_ID_MIN_DIGITS)
        )  # fmt: skip
    with session() as (call, card):
        status = call(card.get_status())
        card_id = call(card.forget_card(known_card(status, wanted)))
    forget_change(card_id)
    print(_("Forgot card {card}: its certificates and reminders are removed.").format(card=card_id))
    return ExitCode.OK


def known_card(status: Status, wanted: str) -> str:
    """The one card the daemon remembers whose id starts with ``wanted``, if it may be
    forgotten; otherwise the reason, in the user's words (the daemon checks again)."""
    matches = [known.card_id for known in status.cards if known.card_id.startswith(wanted)]
    if not matches:
        raise local(errors.InvalidArgument(
            _("No card {card} is known: 'mncctl status' lists the cards mncd remembers.")
            .format(card=wanted)
        ))  # fmt: skip
    if len(matches) > 1:
        raise local(errors.InvalidArgument(
            _("{card} is the start of more than one card id: give more digits.").format(card=wanted)
        ))  # fmt: skip
    if matches[0] == status.card_id and status.state in ("card-present", "reading"):
        raise local(errors.InvalidArgument(
            _("Card {card} is in the reader: take it out first.").format(card=matches[0])
        ))  # fmt: skip
    return matches[0]
