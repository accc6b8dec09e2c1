"""``mncctl``: the command-line client of the mncd daemon (session bus).

mncctl status [--json]                        card, reader and certificate status
mncctl sign FILE [--hash H] [--output SIG]    signature with the signing certificate
mncctl auth [--challenge-file F] ...          authenticate a challenge and verify it locally
mncctl watch [--json]                         print signals and property changes until Ctrl-C
mncctl pkcs11 install|uninstall [--nss DIR]   PKCS#11 for browsers, ssh and GnuTLS via mncd

Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, 4 PIN problem,
5 cancelled.
"""

from __future__ import annotations

import argparse
import sys

from mncd.cli import auth, pkcs11, sign, status, watch
from mncd.cli.errors import ExitCode, error_lines, exit_code
from mncd.cli.pin import stdin_is_tty

#: One module per command group, in the order ``--help`` lists them.
COMMANDS = (status, sign, auth, watch, pkcs11)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of mncctl."""
    parser = argparse.ArgumentParser(
        prog="mncctl",
        description="Command-line client of mncd, the My Number Card (マイナンバーカード) daemon.",
        epilog="exit codes: 0 ok, 1 operation failed, 2 usage error, 3 daemon not reachable, "
        "4 PIN problem, 5 cancelled",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run mncctl and return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already explained by argparse
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:
        for line in error_lines(exc, terminal=stdin_is_tty()):
            print(f"mncctl: {line}", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
