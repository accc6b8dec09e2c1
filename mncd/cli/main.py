"""``mncctl``: the command-line client of the mncd daemon (session bus).

mncctl status [--json]                        card, reader and certificate status
mncctl sign --pdf IN.pdf -o OUT.pdf ...       a signed PDF (the signing certificate)
mncctl sign --cms FILE [-o FILE.p7s]          a detached CMS signature
mncctl sign FILE [--hash H] [--output SIG]    a raw PKCS#1 v1.5 signature
mncctl verify FILE [--signature SIG] [--ca CA]  verify a signed PDF or a CMS signature
mncctl auth [--challenge-file F] ...          authenticate a challenge and verify it locally
mncctl pin status [--json]                    tries left on every PIN, read from the card
mncctl pin change auth|sign|card-info         change a PIN (current PIN, new PIN twice)
mncctl cert show [WHICH] [--json]             certificate details (sign: after the password)
mncctl cert export WHICH -o FILE [--der]      write a certificate (PEM by default)
mncctl check                                  does the signing certificate match the card?
mncctl doctor [--json]                        pcscd, readers, card, daemon: what to fix
mncctl watch [--json]                         print signals and property changes until Ctrl-C
mncctl forget CARD                            forget a card you no longer have
mncctl pkcs11 install|uninstall [--nss DIR]   PKCS#11 for browsers, ssh and GnuTLS via mncd
mncctl browser install|uninstall|status [--chromium DIR]   the bridge for government sites

Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, 4 PIN problem,
5 cancelled, 6 signing certificate expired or invalidated, 7 signature invalid (verify),
8 signature intact but not anchored at a known CA (verify).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mncd import __version__
from mncd.cli.errors import ExitCode, error_line, exit_code
from mncd.cli.text import ArgumentParser, _, use_catalog_for_argparse

#: Each command and the module of mncd.cli that registers it, in the order ``--help`` lists them.
#: A module is imported only when its command runs (or for the list in ``--help``), so that
#: ``mncctl status`` does not load cryptography, pyHanko or pyscard.
COMMANDS = {
    "status": "status",
    "sign": "sign",
    "verify": "verify",
    "auth": "auth",
    "pin": "pin_command",
    "cert": "cert",
    "check": "check",
    "doctor": "doctor",
    "watch": "watch",
    "forget": "forget",
    "pkcs11": "pkcs11",
    "browser": "browser",
}


def _commands_for(argv: Sequence[str]) -> Sequence[str]:
    """The commands the parser needs for ``argv``: the one it names, none for ``--version``,
    every one otherwise (``--help`` lists them, a usage error names them)."""
    for arg in argv:
        if arg == "--version":
            return ()
        if arg.startswith("-"):
            return tuple(COMMANDS)
        return (arg,) if arg in COMMANDS else tuple(COMMANDS)
    return tuple(COMMANDS)


def exit_codes_text() -> str:
    return _(
        "exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, "
        "4 PIN problem, 5 cancelled, 6 signing certificate expired or invalidated, "
        "7 signature invalid, 8 signature not anchored, 9 signature from an expired or revoked "
        "certificate with no timestamp, 10 no signature"
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of mncctl, in the user's language: for ``argv``'s command alone when
    it names one."""
    use_catalog_for_argparse()
    parser = ArgumentParser(
        prog="mncctl",
        description=_("Command-line client of mncd, the My Number Card daemon."),
        epilog=_("examples:\n  mncctl status\n  mncctl sign --pdf form.pdf -o signed.pdf\n"
                 "  mncctl doctor\n\n") + exit_codes_text(),
    )  # fmt: skip
    parser.add_argument(
        "--version", action="version", version=f"mncctl {__version__}",
        help=_("show the version and exit"),
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar=_("COMMAND"))
    for name in COMMANDS if argv is None else _commands_for(argv):
        importlib.import_module(f"mncd.cli.{COMMANDS[name]}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run mncctl and return its exit code."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already explained by argparse
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (Exception, KeyboardInterrupt) as exc:
        from mncd.cli.pin import stdin_is_tty

        print(f"mncctl: {error_line(exc, terminal=stdin_is_tty())}", file=sys.stderr)
        return exit_code(exc)


def quiet_broken_pipe() -> int:
    """The reader of standard output went away (``mncctl status --json | head -2``): it read
    what it wanted, so mncctl ends quietly, as the shell's tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
