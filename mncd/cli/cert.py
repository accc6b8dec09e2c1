"""``mncctl cert``: show the card's certificates, or write one to a file.

The user-authentication certificate and both CA certificates are public and come from the card or
the daemon's cache. The signing certificate holds name, address, birth date and sex: it is read
from the card after the signing password, its personal data are printed only to a terminal, it is
never cached, and it is written only to a file the user names, private (0600).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mncd.cli.errors import ExitCode, UsageError
from mncd.cli.files import check_output
from mncd.cli.output import format_days_left, format_serial, pad
from mncd.cli.pin import PinRequest, call_with_pin
from mncd.cli.session import Run, session
from mncd.cli.text import N_, Texts, _, display_width, subcommand
from mncd.client import MyNumberCard
from mncd.jpki.calendar import japan
from mncd.jpki.details import CertificateDetails, PersonalDetails, describe, personal_data

WHICH = ("auth", "sign", "auth-ca", "sign-ca")
#: What ``cert show`` shows without an argument: the certificates that need no password.
PUBLIC = ("auth", "auth-ca", "sign-ca")
#: Mode of a file holding personal data.
PRIVATE_MODE = 0o600

#: Every text of ``mncctl cert`` (English msgids, read back translated).
TEXT = Texts(
    {
        "title": {
            "auth": N_("User-authentication certificate"),
            "sign": N_("Signing certificate"),
            "auth-ca": N_("User-authentication CA"),
            "sign-ca": N_("Signing CA"),
        },
        "subject": N_("Subject"),
        "issuer": N_("Issuer"),
        "not-before": N_("Valid from"),
        "not-after": N_("Valid until"),
        "serial": N_("Serial"),
        "fingerprint": N_("SHA-256"),
        "key": N_("Key"),
        "key-usage": N_("Key usage"),
        "name": N_("Name"),
        "address": N_("Address"),
        "birth-date": N_("Birth date"),
        "sex": N_("Sex"),
        "sex-value": {"male": N_("male"), "female": N_("female"), "not known": "not known"},
        "unknown": N_("unknown"),
        "withheld": N_("shown only on a terminal"),
        "personal-data": N_("Personal data"),
        "exists": N_("{path} exists: add --force to replace it"),
        "written": N_("wrote the {title} to {path} ({form}{private})"),
        "private": N_(", readable only by you"),
    }
)


def register(sub: argparse._SubParsersAction) -> None:
    command = subcommand(
        sub, "cert", _("show the certificates, or save one"),
        _("Show the card's certificates in Japan's calendar, or save one to a file. The "
          "signing certificate holds your name, address, birth date and sex: the card gives it "
          "only after the signing password."),
        "mncctl cert show", "mncctl cert show sign", "mncctl cert export auth -o auth.pem",
    )  # fmt: skip
    actions = command.add_subparsers(dest="cert_command", required=True, metavar=_("ACTION"))
    show = actions.add_parser(
        "show", help=_("show certificates (sign: after the signing password)")
    )
    show.add_argument(
        "which", nargs="?", choices=WHICH, metavar=_("WHICH"),
        help=_("one certificate: {choices} (default: auth, auth-ca, sign-ca)").format(
            choices=", ".join(WHICH)),
    )  # fmt: skip
    show.add_argument("--json", action="store_true", help=_("print the details as JSON"))
    _add_password_arguments(show)
    show.set_defaults(func=run_show)
    export = actions.add_parser("export", help=_("write a certificate to a file"))
    export.add_argument(
        "which", choices=WHICH, metavar=_("WHICH"),
        help=_("which certificate: {choices}").format(choices=", ".join(WHICH)),
    )  # fmt: skip
    export.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE",
        help=_("the file to write (never replaced without --force)"),
    )  # fmt: skip
    form = export.add_mutually_exclusive_group()
    form.add_argument("--pem", dest="der", action="store_false", help=_("PEM (the default)"))
    form.add_argument("--der", dest="der", action="store_true", help=_("DER"))
    export.add_argument("--force", action="store_true", help=_("replace FILE if it exists"))
    _add_password_arguments(export)
    export.set_defaults(func=run_export, der=False)


def _add_password_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--pin-stdin",
        action="store_true",
        help=_("sign only: read the signing password from the first line of standard input"),
    )
    command.add_argument(
        "--allow-last-try",
        action="store_true",
        help=_("sign only: use the signing password even if only one try is left"),
    )


def fetch(run: Run[Any], card: MyNumberCard, which: str, args: argparse.Namespace) -> bytes:
    """The DER certificate ``which``; the signing certificate after the signing password."""
    if which != "sign":
        return run(card.get_certificate(which))
    return call_with_pin(
        PinRequest.from_args(args, "sign"),
        run,
        card,
        lambda pin, last_try: card.get_signing_certificate(pin=pin, allow_last_try=last_try),
    )


# -- show ---------------------------------------------------------------------------------------


def stdout_is_tty() -> bool:
    """Whether standard output is a terminal (personal data are shown only there)."""
    try:
        return sys.stdout.isatty()
    except ValueError:
        return False


def format_time(when: dt.datetime) -> str:
    """A moment in Japan's time: ``2029-05-31 23:59:59 JST``."""
    return when.astimezone(japan()).strftime("%Y-%m-%d %H:%M:%S JST")


def format_details(
    which: str,
    details: CertificateDetails,
    person: PersonalDetails | None,
    *,
    withheld: bool = False,
    now: dt.datetime | None = None,
) -> list[str]:
    """The lines ``cert show`` prints for one certificate; ``withheld``: personal data (the
    signing certificate's subject and personal data) are not shown."""
    until = f"{format_time(details.not_after)} ({format_days_left(details.days_left(now))})"
    fields = [
        (TEXT["subject"], TEXT["withheld"] if withheld else details.subject),
        (TEXT["issuer"], details.issuer),
        (TEXT["not-before"], format_time(details.not_before)),
        (TEXT["not-after"], until),
        (TEXT["serial"], format_serial(details.serial)),
        (TEXT["fingerprint"], details.fingerprint),
        (TEXT["key"], details.key),
        (TEXT["key-usage"], ", ".join(details.key_usage) or TEXT["unknown"]),
    ]
    if withheld:
        fields.append((TEXT["personal-data"], TEXT["withheld"]))
    elif person is not None:
        birth = person.birth_date.isoformat() if person.birth_date else TEXT["unknown"]
        fields += [
            (TEXT["name"], person.name),
            (TEXT["address"], person.address),
            (TEXT["birth-date"], birth),
            (TEXT["sex"], TEXT["sex-value"].get(person.sex, person.sex)),
        ]
    width = max(display_width(label) for label, _ in fields) + 1
    return [TEXT["title"][which]] + [f"  {pad(label, width)} {value}" for label, value in fields]


def details_json(
    details: CertificateDetails,
    person: PersonalDetails | None,
    *,
    withheld: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """One certificate as JSON (times in Japan's time, ISO 8601)."""
    out: dict[str, Any] = {
        "subject": None if withheld else details.subject,
        "issuer": details.issuer,
        "not_before": details.not_before.astimezone(japan()).isoformat(),
        "not_after": details.not_after.astimezone(japan()).isoformat(),
        "days_left": details.days_left(now),
        "serial": format_serial(details.serial),
        "fingerprint": details.fingerprint,
        "algorithm": details.algorithm,
        "key": details.key,
        "key_usage": list(details.key_usage),
        "ca": details.ca,
    }
    if withheld:
        out["personal_data"] = None
        out["personal_data_withheld"] = True
    elif person is not None:
        out["personal_data"] = {
            "name": person.name,
            "address": person.address,
            "birth_date": person.birth_date.isoformat() if person.birth_date else None,
            "sex": person.sex,
        }
    return out


def run_show(args: argparse.Namespace) -> int:
    chosen = (args.which,) if args.which else PUBLIC
    terminal = stdout_is_tty()
    with session() as (call, card):
        certificates = {which: fetch(call, card, which, args) for which in chosen}
    shown: dict[str, Any] = {}
    blocks: list[list[str]] = []
    for which, der in certificates.items():
        details = describe(der)
        personal = which == "sign"
        withheld = personal and not terminal
        person = personal_data(der) if personal and not withheld else None
        if args.json:
            shown[which] = details_json(details, person, withheld=withheld)
        else:
            blocks.append(format_details(which, details, person, withheld=withheld))
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join("\n".join(block) for block in blocks))
    return ExitCode.OK


# -- export -------------------------------------------------------------------------------------


def encode(der: bytes, *, as_der: bool) -> bytes:
    """The certificate as DER, or as PEM."""
    if as_der:
        return der
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def write_new(path: Path, data: bytes, *, private: bool, replace: bool) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same directory
    (0600 when ``private``), synced, then linked into place, never over an existing file unless
    ``replace``."""
    directory = path.parent if str(path.parent) else Path(".")
    temporary = directory / f".{path.name}.{os.getpid()}.tmp"
    mode = PRIVATE_MODE if private else 0o666
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            if replace:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)  # fails if the file appeared meanwhile
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except FileExistsError as exc:
        raise UsageError(TEXT["exists"].format(path=path)) from exc
    except OSError as exc:
        raise OSError(
            _("cannot write {path}: {reason}").format(path=path, reason=exc.strerror or exc)
        ) from exc


def run_export(args: argparse.Namespace) -> int:
    path: Path = args.output
    check_output(path)
    if not args.force and (path.exists() or path.is_symlink()):
        raise UsageError(TEXT["exists"].format(path=path))
    with session() as (call, card):
        der = fetch(call, card, args.which, args)
    private = args.which == "sign"
    write_new(path, encode(der, as_der=args.der), private=private, replace=args.force)
    print(
        TEXT["written"].format(
            title=TEXT["title"][args.which],
            path=path,
            form="DER" if args.der else "PEM",
            private=TEXT["private"] if private else "",
        )
    )
    return ExitCode.OK
