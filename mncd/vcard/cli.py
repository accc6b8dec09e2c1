"""``mncd-vcard``: a virtual My Number Card for testing without hardware.

mncd-vcard sandbox [--set key=value ...]   isolated pcscd + vpcd with the card inserted
mncd-vcard run [--vpcd HOST:PORT] ...       the card on an existing pcscd's vpcd reader
mncd-vcard settings                         every profile key with its default
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path

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
        print(f"isolated pcscd running; card inserted (ATR {atr})")
        print(f"export PCSCLITE_CSOCK_NAME={sandbox.socket_path}")
        print(f"control socket: {sandbox.control_path}")
        print("Ctrl-C stops it.", flush=True)
        _wait_for_signal()
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

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"mncd-vcard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
