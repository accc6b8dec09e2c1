"""``mncctl check``: does the signing certificate still match the card?

The signing certificate is revoked when the holder's name, address, birth date or sex change.
This reads the card's own record of them (with the card-info PIN) and compares it with the
certificate (read with the signing password, unless the daemon read it since the card was
inserted), then says which kinds of data differ, never their values, and what to do.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mncd import errors
from mncd.cli.errors import (
    ExitCode,
    LastTryRefused,
    PinInputError,
    blocked_text,
    last_try_text,
    local,
)
from mncd.cli.pin import (
    ask_on_terminal,
    fallback_line,
    in_desktop_session,
    read_stdin_pin,
    settled_status,
    stdin_is_tty,
    usable_card,
)
from mncd.cli.session import Run, session
from mncd.cli.text import N_, Texts, _, subcommand
from mncd.client import MyNumberCard, PersonalDataCheck, PinStatus

#: Every text of ``mncctl check`` (English msgids, read back translated).
TEXT = Texts(
    {
        "kinds": {
            "name": N_("name"),
            "address": N_("address"),
            "birth_date": N_("birth date"),
            "sex": N_("sex"),
        },
        "matches": N_(
            "Your signing certificate matches the name, address, birth date and sex on your card."
        ),
        "differs": N_("Your signing certificate no longer matches your card: the {kinds} differ."),
        "revoked": N_(
            "A signing certificate is revoked when these change, so it can no longer be used "
            "to sign. Get a new one issued at your municipal office, with your card and its "
            "signing password."
        ),
        "waiting": N_(
            "Waiting for you to enter the card-info PIN (and the signing password, if it is "
            "asked) in the PIN dialog…"
        ),
        "no-sign": N_(
            "The card has no signing certificate to check: cards of children under 15 carry none."
        ),
        "no-card-info": N_("The card has no card-info PIN."),
        "no-sign-line": N_(
            "--pin-stdin: the signing password is needed to read the certificate: give "
            "it on the second line of standard input"
        ),
    }
)


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "check", _("check that the signing certificate still matches the card"),
        _("Compare the name, address, birth date and sex on the card with the signing "
          "certificate, and say which kinds differ (never their values). Needs the card-info "
          "PIN (4 digits), and the signing password when mncd has not read the certificate "
          "since the card was inserted."),
        "mncctl check", "printf '%s\\n' CARD-INFO-PIN SIGNING-PASSWORD | mncctl check --pin-stdin",
    )  # fmt: skip
    command.add_argument(
        "--pin-stdin",
        action="store_true",
        help=_("read the card-info PIN from the first line of standard input, and the signing "
               "password, when it is needed, from the second"),
    )  # fmt: skip
    command.add_argument(
        "--allow-last-try", action="store_true", help=_("use a PIN even if only one try is left")
    )
    command.set_defaults(func=run)


def describe(result: PersonalDataCheck) -> list[str]:
    """What ``check`` prints for the daemon's answer."""
    if result.matches:
        return [TEXT["matches"]]
    kinds = _(", ").join(TEXT["kinds"].get(kind, kind) for kind in result.changed)
    return [TEXT["differs"].format(kinds=kinds), TEXT["revoked"]]


def usable_tries(status: PinStatus, which: str) -> int | None:
    """Tries left on ``which`` (live), or the error when that PIN cannot be used."""
    counter = status.counter(which)
    if not counter.present:
        text = TEXT["no-sign" if which == "sign" else "no-card-info"]
        raise local(errors.CertificateMissing(text))
    if counter.tries_left == 0:
        raise local(errors.PinBlocked(blocked_text(which)))
    return counter.tries_left


def password_needed(run: Run[Any], card: MyNumberCard) -> bool:
    """Whether the daemon needs the signing password to compare: it does not hold the signing
    certificate (read from the card since it was inserted)."""
    return not run(card.get_status()).sign.certificate_held


def check(run: Run[Any], card: MyNumberCard, args: argparse.Namespace) -> PersonalDataCheck:
    """Compare, asking for the PINs the way the command line says."""
    status = run(settled_status(card))
    if usable_card(status) and not status.sign.present:
        raise local(errors.CertificateMissing(TEXT["no-sign"]))
    counters = run(card.get_pin_status())
    tries = {which: usable_tries(counters, which) for which in ("card-info", "sign")}
    allow = args.allow_last_try
    if args.pin_stdin:
        return run_with_stdin(run, card, tries, allow, not status.sign.certificate_held)
    terminal = stdin_is_tty()
    if in_desktop_session():
        print(TEXT["waiting"], file=sys.stderr, flush=True)
        try:
            return run(card.check_personal_data(allow_last_try=allow))
        except errors.PinRequired as exc:
            if not terminal:
                raise
            print(fallback_line(exc), file=sys.stderr, flush=True)
        counters = run(card.get_pin_status())
        tries = {which: usable_tries(counters, which) for which in ("card-info", "sign")}
    elif not terminal:
        return run(card.check_personal_data(allow_last_try=allow))
    pin, allow_card_info = ask_on_terminal("card-info", tries["card-info"], allow)
    if password_needed(run, card):
        # Each PIN at its last try was confirmed on its own; the call carries one consent.
        sign_pin, allow_sign = ask_on_terminal("sign", tries["sign"], allow)
        return run(
            card.check_personal_data(
                pin=pin, sign_pin=sign_pin, allow_last_try=allow_card_info or allow_sign
            )
        )
    try:
        return run(
            card.check_personal_data(pin=pin, interactive=False, allow_last_try=allow_card_info)
        )
    except errors.PinRequired:
        if not password_needed(run, card):  # the card was taken out and inserted meanwhile
            raise
    sign_pin, allow_sign = ask_on_terminal("sign", tries["sign"], allow)
    return run(
        card.check_personal_data(
            pin=pin, sign_pin=sign_pin, allow_last_try=allow_card_info or allow_sign
        )
    )


def run_with_stdin(
    run: Run[Any],
    card: MyNumberCard,
    tries: dict[str, int | None],
    allow: bool,
    password_wanted: bool,
) -> PersonalDataCheck:
    """``--pin-stdin``: the card-info PIN on the first line, the signing password on the
    second (needed only when the daemon has not read the certificate since the insertion:
    ``password_wanted``). Nothing is sent when a needed line is missing."""
    if tries["card-info"] == 1 and not allow:
        raise LastTryRefused(last_try_text("card-info"))
    pin = read_stdin_pin()
    sign_pin = sys.stdin.readline().rstrip("\r\n") or None
    if sign_pin is None and password_wanted:
        raise PinInputError(TEXT["no-sign-line"])
    if sign_pin is not None and tries["sign"] == 1 and not allow:
        raise LastTryRefused(last_try_text("sign"))
    try:
        return run(
            card.check_personal_data(
                pin=pin, sign_pin=sign_pin, interactive=False, allow_last_try=allow
            )
        )
    except errors.PinRequired:
        if sign_pin is None and password_needed(run, card):  # taken out and inserted meanwhile
            raise PinInputError(TEXT["no-sign-line"]) from None
        raise


def run(args: argparse.Namespace) -> int:
    with session() as (call, card):
        result = check(call, card, args)
    for line in describe(result):
        print(line)
    return ExitCode.OK if result.matches else ExitCode.FAILED
