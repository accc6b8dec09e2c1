"""``mncd-vcard``: a virtual My Number Card for testing without hardware.

mncd-vcard sandbox [--set key=value ...]   isolated pcscd + vpcd with the card inserted
mncd-vcard run [--vpcd HOST:PORT] ...       the card on an existing pcscd's vpcd reader
mncd-vcard settings                         every profile key with its default

Driving a running sandbox (its control socket from --control or $MNCD_VCARD_CONTROL):
mncd-vcard insert [--slot N] [--set key=value ...]   put a card in (the same one, or a new one)
mncd-vcard remove [--slot N]                         take the card out
mncd-vcard pull --on HEX [--slot N]                  take it out when such a command arrives
mncd-vcard pcscd stop|start|kill|freeze|thaw|status  the sandbox's pcscd
mncd-vcard tries [--card NAME]                       the card's PIN counters
mncd-vcard renew-sign [--card NAME]                  a new signing certificate on the card
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .card import CARD_DATA
from .control import CardControl, ControlError
from .profile import CONTACT_ATRS, CONTACTLESS_ATRS, PRESETS, CardProfile


def _profile(args: argparse.Namespace) -> CardProfile:
    profile = CardProfile.load(args.profile) if args.profile else CardProfile.preset(args.preset)
    return profile.with_overrides(args.set or [])


def _add_profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", type=Path, help="profile file (.json or .toml)")
    parser.add_argument(
        "--preset",
        default="current",
        choices=sorted(PRESETS),
        help="starting profile; next-generation-provisional = ECDSA P-384 keys and 10-year "
        "certificates in today's AP layout (the real next-generation layout is not public yet)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one profile setting (repeatable); see 'mncd-vcard settings'",
    )


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def cmd_run(args: argparse.Namespace) -> int:
    from .host import CardHost

    host_name, _, port = args.vpcd.rpartition(":")
    host = CardHost(host_name or "127.0.0.1", int(port))
    card = host.card("default", _profile(args))
    if args.log:
        log_file = args.log.open("a", encoding="utf-8")

        def write(entry: object) -> None:
            log_file.write(f"{entry.time:.6f} {entry.command} {entry.response}\n")  # type: ignore[attr-defined]
            log_file.flush()

        card.on_log = write
    host.insert(0, card)
    print(f"card inserted into vpcd at {args.vpcd} (ATR {card.atr.hex().upper()})")
    if args.control:
        threading.Thread(target=host.serve_control, args=(args.control,), daemon=True).start()
        print(f"control socket: {args.control}")
    _wait_for_signal()
    host.remove_all()
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import PcscSandbox

    profile = _profile(args)
    with PcscSandbox(debug=args.debug) as sandbox:
        atr = sandbox.control.insert(profile)
        # "Inserted" once pcscd sees the card (vpcd is polled), as mncd-vcard insert says it:
        # a daemon started right after the exports below finds the card in the reader.
        os.environ.update(sandbox.env)
        _wait_for_reader(0, present=True)
        print(f"isolated pcscd running; card inserted (ATR {atr})")
        print("# for PC/SC programs (mncd, OpenSC) and for the mncd-vcard commands, in a shell:")
        print(f"export PCSCLITE_CSOCK_NAME={sandbox.socket_path}")
        print(f"export {CONTROL_ENV}={sandbox.control_path}")
        print("Ctrl-C stops it.", flush=True)
        _wait_for_signal()
    return 0


# -- driving a running sandbox ------------------------------------------------------------

#: The control socket of a running sandbox, as ``mncd-vcard sandbox`` prints it.
CONTROL_ENV = "MNCD_VCARD_CONTROL"


def _control(args: argparse.Namespace) -> CardControl:
    path = args.control or os.environ.get(CONTROL_ENV)
    if not path:
        raise ValueError(
            f"no sandbox: start one with 'mncd-vcard sandbox' and export the {CONTROL_ENV} it "
            "prints, or pass --control"
        )
    if not Path(path).is_socket():
        raise ValueError(f"no sandbox is running at {path} (start one with 'mncd-vcard sandbox')")
    return CardControl(path)


def cmd_insert(args: argparse.Namespace) -> int:
    control = _control(args)
    settings = args.set or []
    keys = {item.partition("=")[0].strip() for item in settings}
    same_card = not args.new and args.profile is None and args.preset is None
    if same_card and not keys <= set(CARD_DATA):
        same_card = False  # other settings make another card (new keys and certificates)
    if same_card:
        try:
            if keys:
                control.call("update", card=args.card, settings=settings)
            atr = control.insert(slot=args.slot, card=args.card)
        except ControlError:
            same_card = False  # no such card yet
    if not same_card:
        args.preset = args.preset or "current"
        atr = control.insert(_profile(args), slot=args.slot, card=args.card)
    _wait_for_reader(args.slot, present=True)
    what = "the same card" if same_card else "a new card"
    print(f"{what} ({args.card}) inserted into slot {args.slot} (ATR {atr})")
    return 0


def _wait_for_reader(slot: int, present: bool, timeout: float = 10.0) -> None:
    """Return once pcscd sees the card in (or out of) the slot's reader, as a hand would wait
    for the reader's light; does nothing without the sandbox's PCSCLITE_CSOCK_NAME."""
    if not os.environ.get("PCSCLITE_CSOCK_NAME"):
        return
    from smartcard import scard

    reader = f"Virtual PCD 00 {slot:02d}"
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hresult, states = scard.SCardGetStatusChange(
                context, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
            )
            if hresult == scard.SCARD_S_SUCCESS:
                state = states[0][1]
                if bool(state & scard.SCARD_STATE_PRESENT) == present and not (
                    state & scard.SCARD_STATE_MUTE
                ):
                    return
            time.sleep(0.05)
    finally:
        scard.SCardReleaseContext(context)


def cmd_remove(args: argparse.Namespace) -> int:
    removed = _control(args).remove(args.slot)
    _wait_for_reader(args.slot, present=False)
    print(f"card removed from slot {args.slot}" if removed else f"slot {args.slot} was empty")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    bytes.fromhex(args.on)  # a clear error for a prefix that is not hex
    _control(args).pull_on(args.on.upper(), slot=args.slot)
    print(f"the card in slot {args.slot} is taken out when a command {args.on.upper()}… arrives")
    return 0


def cmd_pcscd(args: argparse.Namespace) -> int:
    running = _control(args).call("pcscd", action=args.action)["running"]
    print(f"pcscd {'running' if running else 'stopped'}")
    return 0


def cmd_tries(args: argparse.Namespace) -> int:
    for name, tries in _control(args).tries(args.card).items():
        print(f"{name:10} {tries}")
    return 0


def cmd_renew_sign(args: argparse.Namespace) -> int:
    _control(args).renew_signing_certificate(args.card)
    print(f"card {args.card} now holds a new signing certificate; the old one is revoked")
    return 0


def cmd_settings(_: argparse.Namespace) -> int:
    for f in dataclasses.fields(CardProfile):
        if f.name == "extra":
            continue
        print(f"{f.name:24} {getattr(CardProfile(), f.name)!r}")
    print("\natr presets:", ", ".join([*CONTACT_ATRS, *CONTACTLESS_ATRS]))
    print("profile presets (--preset):", ", ".join(PRESETS))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mncd-vcard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="insert the card into an existing vpcd reader")
    _add_profile_args(run)
    run.add_argument("--vpcd", default="127.0.0.1:35963", help="vpcd address (HOST:PORT)")
    run.add_argument("--log", type=Path, help="append every APDU answered to this file")
    run.add_argument("--control", type=Path, help="serve the control socket at this path")
    run.set_defaults(func=cmd_run)

    sandbox = sub.add_parser("sandbox", help="isolated pcscd + vpcd with the card inserted")
    _add_profile_args(sandbox)
    sandbox.add_argument("--debug", action="store_true", help="pcscd debug and APDU logs")
    sandbox.set_defaults(func=cmd_sandbox)

    settings = sub.add_parser("settings", help="list profile settings and defaults")
    settings.set_defaults(func=cmd_settings)

    def driving(name: str, help: str, func: object, slot: bool = False, card: bool = False):
        command = sub.add_parser(name, help=help, description=help)
        command.add_argument(
            "--control", type=Path, help=f"the sandbox's control socket (default: ${CONTROL_ENV})"
        )
        if slot:
            command.add_argument("--slot", type=int, default=0, choices=(0, 1), help="reader")
        if card:
            command.add_argument("--card", default="default", help="the card's name")
        command.set_defaults(func=func)
        return command

    insert = driving(
        "insert",
        "put a card into a reader of a running sandbox: the same card again (name, address, "
        "birth_date and sex may change, as on a real card after a move), or a new card when "
        "other settings, --preset, --profile or --new are given",
        cmd_insert, slot=True, card=True,
    )  # fmt: skip
    _add_profile_args(insert)
    insert.set_defaults(preset=None)
    insert.add_argument("--new", action="store_true", help="a new card, new keys")
    driving("remove", "take the card out of a reader", cmd_remove, slot=True)
    pull = driving("pull", "take the card out as soon as a given command arrives", cmd_pull,
                   slot=True)  # fmt: skip
    pull.add_argument("--on", required=True, metavar="HEX", help="command prefix, e.g. 802A")
    pcscd = driving(
        "pcscd", "stop, start, kill or freeze (hang) and thaw the sandbox's pcscd", cmd_pcscd
    )
    pcscd.add_argument("action", choices=("stop", "start", "kill", "freeze", "thaw", "status"))
    driving("tries", "the card's PIN counters", cmd_tries, card=True)
    driving("renew-sign", "the municipal office issues a new signing certificate onto the card",
            cmd_renew_sign, card=True)  # fmt: skip

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError, ControlError) as exc:
        print(f"mncd-vcard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
