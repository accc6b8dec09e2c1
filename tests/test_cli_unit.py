"""Unit tests of mncctl's plain functions: formatting, error mapping, conversions, verification.

None of these needs a bus, a daemon or a card.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import shlex
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID
from dbus_next import Variant

from mncd import __version__, api, client, errors
from mncd.cli import errors as cli_errors
from mncd.cli import files, output
from mncd.cli import main as cli
from mncd.cli import pin as cli_pin
from mncd.cli import status as status_command
from mncd.cli.errors import ExitCode
from mncd.client import Event, Status, connection, error_for_reply

ERR = "io.github.mncd.MyNumberCard1.Error."
JST = dt.timezone(dt.timedelta(hours=9))
#: This installation's mncd --install-user-service as mncctl names it when mncd is not on the PATH.
INSTALL = (
    f"{shlex.quote(os.path.join(os.path.dirname(sys.executable), 'mncd'))} --install-user-service"
)
# 2029-05-30 15:30 UTC is already 2029-05-31 in Japan.
NOT_AFTER = int(dt.datetime(2029, 5, 30, 15, 30, tzinfo=dt.UTC).timestamp())
FINGERPRINT = "ab" * 32


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    """mncctl's texts in English (the msgids), whatever the locale of the test run."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LANGUAGE", "")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)


def cert_status(**overrides: Variant) -> Variant:
    fields = {
        "present": Variant("b", True),
        "source": Variant("s", "card"),
        "state": Variant("s", "valid"),
        "not_before": Variant("x", NOT_AFTER - 5 * 365 * 86400),
        "not_after": Variant("x", NOT_AFTER),
        "days_left": Variant("i", 1283),
        "serial": Variant("s", "1A2B3C"),
        "fingerprint": Variant("s", FINGERPRINT),
        "issuer": Variant("s", "OU=Japan Agency for Local Authority Information Systems, C=JP"),
        "algorithm": Variant("s", "rsa2048"),
        "pin_tries_left": Variant("i", 3),
    }
    fields.update(overrides)
    return Variant("a{sv}", fields)


def daemon_status(**overrides: Variant) -> dict[str, Variant]:
    """A GetStatus answer as dbus-next delivers it."""
    status = {
        "state": Variant("s", "card-present"),
        "readers": Variant("as", ["ACS ACR39U ICC Reader 00 00"]),
        "reader": Variant("s", "ACS ACR39U ICC Reader 00 00"),
        "token": Variant("s", "card"),
        "auth": cert_status(),
        "sign": cert_status(pin_tries_left=Variant("i", 5), serial=Variant("s", "4D5E")),
    }
    status.update(overrides)
    return status


def lines_for(name: str, text: str, *, terminal: bool = False) -> list[str]:
    """What mncctl prints for an error reply named ``name``."""
    return cli_errors.error_lines(error_for_reply(name, text), terminal=terminal)


def table(
    status: dict[str, Variant], tz: dt.tzinfo | None = None, details: bool = False,
    width: int | None = None,
) -> str:  # fmt: skip
    """The status table for a GetStatus answer (``mncctl status [--details]``)."""
    return output.format_status(Status.from_dbus(status), tz=tz, details=details, width=width)


def section(text: str, title: str) -> str:
    """The block of the status table under ``title`` (up to the next blank line)."""
    start = text.index(title)
    end = text.find("\n\n", start)
    return text[start : end if end >= 0 else None]


# ---------------------------------------------------------------------------------------------
# error -> exit code and message


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (ERR + "PinFormat", ExitCode.PIN),
        (ERR + "PinIncorrect", ExitCode.PIN),
        (ERR + "PinBlocked", ExitCode.PIN),
        (ERR + "PinRequired", ExitCode.PIN),
        (ERR + "Cancelled", ExitCode.CANCELLED),
        (ERR + "NoCard", ExitCode.FAILED),
        (ERR + "PcscUnavailable", ExitCode.FAILED),
        (ERR + "CardRemoved", ExitCode.FAILED),
        (ERR + "CertificateMissing", ExitCode.FAILED),
        (ERR + "CertificateInvalid", ExitCode.FAILED),
        (ERR + "InvalidArgument", ExitCode.FAILED),
        (ERR + "NotSupported", ExitCode.FAILED),
        (ERR + "Failed", ExitCode.FAILED),
        (ERR + "SomethingNewer", ExitCode.FAILED),
        ("org.freedesktop.DBus.Error.ServiceUnknown", ExitCode.UNREACHABLE),
        ("org.freedesktop.DBus.Error.NameHasNoOwner", ExitCode.UNREACHABLE),
        ("org.freedesktop.DBus.Error.Spawn.ChildExited", ExitCode.UNREACHABLE),
        ("org.freedesktop.systemd1.NoSuchUnit", ExitCode.UNREACHABLE),
        ("org.freedesktop.DBus.Error.UnknownMethod", ExitCode.FAILED),
        # the daemon went away while it had the call: as unreachable as a daemon not running
        ("org.freedesktop.DBus.Error.NoReply", ExitCode.UNREACHABLE),
        ("org.freedesktop.DBus.Error.Disconnected", ExitCode.UNREACHABLE),
    ],
)
def test_exit_code_for_error(name: str, code: ExitCode) -> None:
    assert cli_errors.exit_code(error_for_reply(name, "")) == code


def test_exit_codes_are_the_documented_numbers() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_daemon_error_text_is_replaced_by_mncctls_sentence_keeping_the_tries() -> None:
    # The daemon's text is in the daemon's language; mncctl says it in the user's, with the
    # tries left taken from the typed error.
    text = "incorrect signing password: 4 tries left (残り4回)"
    assert lines_for(ERR + "PinIncorrect", text) == ["Wrong PIN or password: 4 tries left."]


def test_pin_blocked_is_one_line_with_the_municipal_office_hint() -> None:
    lines = lines_for(ERR + "PinBlocked", "signing password is blocked: no tries left")
    assert lines == [
        "The PIN or password is locked: it was entered wrongly too many times. Have it reset "
        "at your municipal office (bring your My Number Card)."
    ]


def test_pin_required_tells_how_to_give_the_pin() -> None:
    lines = lines_for(ERR + "PinRequired", "a PIN is required")
    assert lines == [
        "A PIN is needed and no PIN dialog could be shown: run mncctl in a terminal to be "
        "asked there, or pass it with --pin-stdin."
    ]


def test_empty_error_text_still_gets_a_sentence() -> None:
    assert lines_for(ERR + "CertificateMissing", "") == ["The card has no such certificate."]


def test_daemon_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a checkout: its mncd is not on the PATH
    lines = lines_for(
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "The name io.github.mncd.MyNumberCard1 was not provided by any .service files",
    )
    assert lines == [
        f"mncd is not installed for this user: install it with '{INSTALL}', then try again."
    ]


def test_the_install_command_is_mncd_only_when_the_path_finds_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkout's mncd is .venv/bin/mncd: the hint names it unless the PATH leads to it."""
    bin_dir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin")
    assert cli_errors.install_command() == "mncd --install-user-service"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli_errors.install_command() == INSTALL


@pytest.mark.parametrize("name", ["NoReply", "Disconnected"])
def test_daemon_stopped_mid_call_says_nothing_was_done(name: str) -> None:
    lines = lines_for(
        f"org.freedesktop.DBus.Error.{name}",
        "Message recipient disconnected from message bus without replying",
    )
    assert lines == [
        "mncd stopped before it answered; nothing was signed or changed. Its log may say why: "
        "journalctl --user -u mncd"
    ]


def test_foreign_error_names_are_kept_for_diagnosis() -> None:
    assert lines_for("org.freedesktop.DBus.Error.AccessDenied", "denied") == [
        "The session bus answered with an error: org.freedesktop.DBus.Error.AccessDenied: denied"
    ]


def test_main_prints_one_prefixed_line_and_returns_the_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_: object) -> int:
        raise error_for_reply(ERR + "PinBlocked", "signing password is blocked: no tries left")

    monkeypatch.setattr(status_command, "run", fail)
    assert cli.main(["status"]) == ExitCode.PIN
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "mncctl: The PIN or password is locked: it was entered wrongly too many times. Have it "
        "reset at your municipal office (bring your My Number Card)."
    ]


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            client.BusUnavailable("cannot connect to the session bus: x"),
            3,
            "The session bus cannot be reached: run mncctl inside your desktop session.",
        ),
        (cli_errors.UsageError("cannot read nope.pdf: No such file or directory"), 2, "nope.pdf"),
        (cli_errors.PinInputError("--pin-stdin: standard input is empty"), 4, "--pin-stdin"),
        (cli_errors.CancelledByUserError("cancelled"), 5, "cancelled"),
        (KeyboardInterrupt(), 5, "Cancelled."),
        (cli_errors.VerificationError("the signature does not verify"), 1, "does not verify"),
        (OSError("cannot write a.sig: Disk quota exceeded"), 1, "a.sig"),
    ],
)
def test_main_maps_local_failures(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
    message: str,
) -> None:
    def fail(_: object) -> int:
        raise error

    monkeypatch.setattr(status_command, "run", fail)
    assert cli.main(["status"]) == code
    err = capsys.readouterr().err
    assert err.startswith("mncctl: ")
    assert message in err
    assert "Traceback" not in err


def test_usage_errors_return_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sign"]) == ExitCode.USAGE
    assert cli.main(["frobnicate"]) == ExitCode.USAGE
    assert cli.main(["sign", "x", "--hash", "md5"]) == ExitCode.USAGE
    assert "usage: mncctl" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out == f"mncctl {__version__}\n"


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == ExitCode.OK
    assert "exit codes" in capsys.readouterr().out


def test_sign_of_a_missing_file_is_a_usage_error(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sign", f"{tmp_path}/missing.pdf"]) == ExitCode.USAGE
    assert capsys.readouterr().err.startswith("mncctl: cannot read ")


# ---------------------------------------------------------------------------------------------
# Variants -> JSON


def test_to_plain_unwraps_nested_variants_and_keeps_types() -> None:
    plain = client.plain(daemon_status())
    assert plain["state"] == "card-present"
    assert plain["readers"] == ["ACS ACR39U ICC Reader 00 00"]
    assert plain["auth"]["present"] is True
    assert plain["auth"]["not_after"] == NOT_AFTER
    assert type(plain["auth"]["days_left"]) is int
    assert plain["sign"]["pin_tries_left"] == 5


def test_to_plain_turns_bytes_into_hex() -> None:
    assert client.plain(Variant("ay", b"\x01\xff")) == "01ff"


def test_status_json_is_valid_json_with_ints_and_japanese_unescaped() -> None:
    status = daemon_status(reader=Variant("s", "リーダー"))
    text = output.status_json(Status.from_dbus(status))
    assert "リーダー" in text
    parsed = json.loads(text)
    assert parsed["auth"]["days_left"] == 1283
    assert parsed["auth"]["pin_tries_left"] == 3
    assert parsed["auth"]["present"] is True


def test_status_json_has_null_for_what_is_not_known_never_0() -> None:
    # GetStatus sends 0, -1 or "" for what is not known; mncctl's JSON says null.
    unread = Variant(
        "a{sv}",
        {
            "present": Variant("b", True), "source": Variant("s", "card"),
            "state": Variant("s", "unknown"), "not_before": Variant("x", 0),
            "not_after": Variant("x", 0), "days_left": Variant("i", 0),
            "serial": Variant("s", ""), "fingerprint": Variant("s", ""),
            "issuer": Variant("s", ""), "algorithm": Variant("s", ""),
            "pin_tries_left": Variant("i", -1),
        },
    )  # fmt: skip
    parsed = json.loads(output.status_json(Status.from_dbus(daemon_status(sign=unread))))
    assert parsed["sign"] == {
        "present": True, "source": "card", "state": "unknown", "not_before": None,
        "not_after": None, "days_left": None, "serial": None, "fingerprint": None,
        "issuer": None, "algorithm": None, "pin_tries_left": None,
    }  # fmt: skip
    # known values stay as GetStatus sends them, 0 days left included (the last day)
    last_day = daemon_status(auth=cert_status(days_left=Variant("i", 0)))
    auth = json.loads(output.status_json(Status.from_dbus(last_day)))["auth"]
    assert auth["days_left"] == 0 and auth["not_after"] == NOT_AFTER and auth["serial"] == "1A2B3C"


# ---------------------------------------------------------------------------------------------
# status table


def test_status_table_shows_state_reader_and_both_certificates() -> None:
    text = table(daemon_status(), tz=JST, details=True)
    assert text.splitlines()[0] == "State:            My Number Card present"
    assert "Reader:           ACS ACR39U ICC Reader 00 00" in text
    assert "Token:" not in text  # an ordinary card: no token line
    auth = section(text, "User-authentication certificate")
    sign = section(text, "Signing certificate")
    assert "  State:          valid" in auth
    assert "  Expires:        2029-05-31 (1283 days left)" in auth
    assert "  Source:         read from the card" in auth
    assert "  PIN tries:      3/3" in auth
    assert "  Serial:         1A2B3C" in auth
    assert f"  Fingerprint:    {FINGERPRINT}" in auth
    assert "  Issuer:         OU=Japan Agency" in auth
    assert "Next step:" not in text  # nothing to do for valid certificates
    assert "  Password tries: 5/5" in sign
    assert "  Serial:         4D5E" in sign


def test_status_serials_are_upper_case_hex_as_sign_prints_them() -> None:
    status = daemon_status(sign=cert_status(serial=Variant("s", "4d5e0a")))
    assert "  Serial:         4D5E0A" in section(table(status, details=True), "Signing certificate")
    assert json.loads(output.status_json(Status.from_dbus(status)))["sign"]["serial"] == "4D5E0A"


def test_status_of_an_invalidated_certificate_has_no_expiry_and_says_what_to_do() -> None:
    held = cert_status(state=Variant("s", "invalidated"), certificate_held=Variant("b", True))
    sign = section(table(daemon_status(sign=held), tz=JST), "Signing certificate")
    assert "  State:          invalidated (revoked)" in sign
    assert "Expires:" not in sign and "days left" not in sign
    assert (
        "  Next step:      It can no longer be used. Get a new one issued at your municipal "
        "office (bring your My Number Card)." in sign
    )


def test_status_of_an_invalidated_certificate_not_read_again_says_how_a_new_one_is_read() -> None:
    """The office may have written a new certificate since mncd read the invalidated one."""
    status = daemon_status(sign=cert_status(state=Variant("s", "invalidated")))
    sign = section(table(status, tz=JST), "Signing certificate")
    assert "  State:          invalidated (revoked)" in sign
    assert (
        "  Next step:      Get a new one issued at your municipal office (bring your My Number "
        "Card). If you already have, sign something or run 'mncctl cert show sign': mncd reads "
        "the new one after your signing password." in sign
    )


def test_status_of_a_signing_certificate_not_read_yet_says_how_it_becomes_known() -> None:
    unread = Variant(
        "a{sv}",
        {"present": Variant("b", True), "source": Variant("s", "card"),
         "state": Variant("s", "unknown"), "pin_tries_left": Variant("i", 5)},
    )  # fmt: skip
    sign = section(table(daemon_status(sign=unread), details=True), "Signing certificate")
    assert sign.splitlines()[1:] == [
        "  State:          unknown",
        "  Expires:        unknown",
        "  Next step:      The card gives it only after the signing password: it becomes known "
        "the first time you sign, or with 'mncctl cert show sign'.",
        "  Source:         read from the card",
        "  Password tries: 5/5",
    ]


def test_status_expiry_is_a_date_in_the_given_time_zone() -> None:
    assert "2029-05-30" in table(daemon_status(), tz=dt.UTC)
    assert "2029-05-31" in table(daemon_status(), tz=JST)


def test_status_expiry_date_is_japans_by_default() -> None:
    # 2029-05-30 15:30 UTC is 2029-05-31 in Japan, where the certificate's days are counted.
    assert "  Expires:        2029-05-31 (1283 days left)" in table(daemon_status())


def test_status_shows_the_card_id_and_the_other_cards_to_forget() -> None:
    other = {
        "card_id": Variant("s", "cd" * 16),
        "last_seen": Variant("x", int(dt.datetime(2026, 4, 1, 3, tzinfo=dt.UTC).timestamp())),
        "not_after": Variant("x", NOT_AFTER),
        "renewed_to": Variant("s", ""),
    }
    renewed = {**other, "card_id": Variant("s", "ef" * 16), "renewed_to": Variant("s", "ab" * 16)}
    this = {**other, "card_id": Variant("s", "ab" * 16)}
    status = daemon_status(
        card_id=Variant("s", "ab" * 16), cards=Variant("aa{sv}", [this, other, renewed])
    )
    parsed = Status.from_dbus(status)
    assert parsed.card_id == "ab" * 16 and len(parsed.cards) == 3
    text = table(status, tz=JST, details=True)
    assert f"Card:             {'ab' * 16}" in text
    others = section(text, "Other cards seen")
    assert "mncctl forget CARD" in others
    assert f"  {'cd' * 16}  last seen 2026-04-01, expires 2029-05-31" in others
    assert f"  {'ef' * 16}  last seen 2026-04-01, renewed: now card {'ab' * 16}" in others
    assert f"  {'ab' * 16}  " not in others  # the card described is not listed again


def test_status_while_a_known_card_is_read_says_so() -> None:
    status = daemon_status(
        state=Variant("s", "reading"), auth=cert_status(source=Variant("s", "cache"))
    )
    text = table(status, tz=JST, details=True)
    assert text.splitlines()[0] == "State:            reading the card"
    assert "  Source:         as last read from this card; it is being read now" in section(
        text, "User-authentication certificate"
    )


def test_forget_takes_one_card_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forget"]) == ExitCode.USAGE
    assert cli.main(["forget", "--help"]) == ExitCode.OK
    assert "mncctl status" in capsys.readouterr().out


def test_status_of_a_cached_expiring_certificate_with_few_tries() -> None:
    status = daemon_status(
        state=Variant("s", "no-card"),
        reader=Variant("s", ""),
        sign=cert_status(
            source=Variant("s", "cache"),
            state=Variant("s", "expiring"),
            days_left=Variant("i", 1),
            pin_tries_left=Variant("i", 0),
        ),
    )
    text = table(status, tz=JST, details=True)
    assert text.splitlines()[0] == (
        "State:            no card in the reader: insert your My Number Card"
    )
    assert "Reader:           (none)" in text
    assert "Readers:          ACS ACR39U ICC Reader 00 00" in text
    sign = section(text, "Signing certificate")
    assert "  State:          expiring soon" in sign
    assert "  Expires:        2029-05-31 (1 day left)" in sign
    assert (
        "  Next step:      Renewal is open until it expires: renew it at your municipal office "
        "(bring your My Number Card)." in sign
    )
    assert "  Source:         as last read from the card (cached)" in sign
    assert "  Password tries: 0/5 (locked: have it reset at your municipal office)" in sign


def test_status_for_people_leaves_ids_dns_and_fingerprints_to_details() -> None:
    other = {"card_id": Variant("s", "cd" * 16), "last_seen": Variant("x", 1775000000),
             "not_after": Variant("x", NOT_AFTER), "renewed_to": Variant("s", "")}  # fmt: skip
    status = daemon_status(card_id=Variant("s", "ab" * 16), cards=Variant("aa{sv}", [other]))
    text = table(status, tz=JST)
    assert section(text, "User-authentication certificate").splitlines() == [
        "User-authentication certificate",
        "  State:          valid",
        "  Expires:        2029-05-31 (1283 days left)",
        "  PIN tries:      3/3",
    ]
    for hidden in ("ab" * 16, "cd" * 16, "Serial:", "Issuer:", "Fingerprint:", "Source:", "Card:"):
        assert hidden not in text
    assert text.splitlines()[-1] == "1 other card seen: 'mncctl status --details' lists it."


def test_status_shows_no_card_id_when_no_card_is_in() -> None:
    status = daemon_status(state=Variant("s", "no-card"), card_id=Variant("s", "9f" * 16))
    assert "9f" * 16 not in table(status, tz=JST, details=True)
    present = daemon_status(card_id=Variant("s", "9f" * 16))
    assert f"Card:             {'9f' * 16}" in table(present, tz=JST, details=True)


def test_status_lines_wrap_with_a_hanging_indent(monkeypatch: pytest.MonkeyPatch) -> None:
    status = daemon_status(sign=cert_status(state=Variant("s", "invalidated")))
    lines = section(table(status, tz=JST, width=60), "Signing certificate").splitlines()
    step = lines.index(next(line for line in lines if line.startswith("  Next step:")))
    assert lines[step] == "  Next step:      Get a new one issued at your municipal"
    assert lines[step + 1] == "                  office (bring your My Number Card). If you"
    assert all(len(line) <= 60 for line in lines)
    monkeypatch.setenv("LANGUAGE", "ja")
    wrapped = section(table(status, tz=JST, width=60), "署名用電子証明書").splitlines()
    step = wrapped.index(next(line for line in wrapped if "次にすること" in line))
    value_column = output.display_width(wrapped[step]) - output.display_width(
        wrapped[step].split(" ")[-1]
    )
    assert wrapped[step + 1].startswith(" " * value_column)
    assert wrapped[step + 1][value_column] != " "
    for line in wrapped:
        assert output.display_width(line) <= 60, line


def test_status_of_an_expired_certificate() -> None:
    status = daemon_status(
        auth=cert_status(state=Variant("s", "expired"), days_left=Variant("i", -12))
    )
    auth = section(table(status, tz=JST), "User-authentication certificate")
    assert "  State:          expired" in auth
    assert "  Expires:        2029-05-31 (expired 12 days ago)" in auth
    assert "  Next step:      It can no longer be used. Get a new one issued" in auth


def test_status_with_missing_certificate_and_unknown_values() -> None:
    status = daemon_status(
        auth=Variant(
            "a{sv}",
            {
                "present": Variant("b", False),
                "source": Variant("s", "card"),
                "pin_tries_left": Variant("i", -1),
            },
        ),
        sign=cert_status(not_after=Variant("x", 0), pin_tries_left=Variant("i", -1)),
    )
    text = table(status, tz=JST)
    auth = section(text, "User-authentication certificate")
    assert auth.splitlines()[1:] == [
        "  State:          not on this card",
        "  Why:            One can be issued at your municipal office (bring your My Number Card).",
    ]
    # The signing certificate: under-15 cards carry none, and the table says so.
    no_sign = daemon_status(sign=cert_status(present=Variant("b", False)))
    assert section(table(no_sign), "Signing certificate").splitlines()[1:] == [
        "  State:          not on this card",
        "  Why:            Cards of children under 15 carry no signing certificate. From 15, "
        "one can be issued at your municipal office (bring your My Number Card).",
        "  Password tries: 3/5",
    ]
    # Nothing known yet (no card read, or a card being read for the first time) is not "absent".
    unknown = Variant("a{sv}", {"present": Variant("b", False), "source": Variant("s", "none")})
    for state in ("reading", "no-card"):
        nothing = table(daemon_status(state=Variant("s", state), auth=unknown, sign=unknown))
        assert "not on this card" not in nothing
        assert section(nothing, "Signing certificate").splitlines()[1:] == [
            "  State:          not known yet",
            "  Next step:      It becomes known when your My Number Card is inserted and read.",
        ]
    sign = section(text, "Signing certificate")
    assert "  Expires:        unknown" in sign
    assert "  Password tries: unknown" in sign


def test_status_ignores_unknown_keys_and_survives_missing_ones() -> None:
    status = {
        "state": Variant("s", "pcsc-unavailable"),
        "future_key": Variant("a{sv}", {"x": Variant("i", 1)}),
        "auth": Variant("a{sv}", {"present": Variant("b", True), "brand_new": Variant("b", True)}),
    }
    text = table(status)
    assert text.startswith(
        "State:            the smart-card service pcscd is not running: install and start it"
    )
    assert "future_key" not in text
    assert "brand_new" not in text
    assert "Signing certificate" not in text  # no sign entry: no section
    auth = section(text, "User-authentication certificate")
    assert "  State:          unknown" in auth
    assert (
        "  Next step:      Its state becomes known when the card is next read in a reader." in auth
    )


def test_status_shows_unknown_state_and_token_values_raw() -> None:
    text = table(daemon_status(state=Variant("s", "warming-up")))
    assert text.splitlines()[0] == "State:            warming-up"
    assert "Token:" not in text
    android = table(daemon_status(token=Variant("s", "android")))
    assert "Token:            Android smartphone certificate" in android
    assert "Token:            wearable" in table(daemon_status(token=Variant("s", "wearable")))
    # no card, no token line (the daemon still says "card")
    assert "Token:" not in table(daemon_status(state=Variant("s", "no-card")))


@pytest.mark.parametrize(
    ("days", "text"),
    [(30, "30 days left"), (1, "1 day left"), (0, "expires today"), (-1, "expired 1 day ago")],
)
def test_format_days_left(days: int, text: str) -> None:
    assert output.format_days_left(days) == text


def test_tries_note_only_when_tries_are_short() -> None:
    assert cli_pin.tries_note("sign", 5) is None
    assert cli_pin.tries_note("sign", -1) is None
    assert cli_pin.tries_note("auth", 2) == (
        "2 tries are left before the user-authentication PIN is locked."
    )
    assert cli_pin.tries_note("sign", 1) == "1 try is left before the signing password is locked."


# ---------------------------------------------------------------------------------------------
# options and PIN input


class Recorder(client.MyNumberCard):
    """A client whose calls are recorded instead of sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list]] = []

    async def call(self, member, signature="", body=(), **kwargs):  # type: ignore[override]
        self.calls.append((member, signature, list(body)))
        return [b"signature", b"certificate"]


def sent_options(coroutine_of: object) -> dict[str, Variant]:
    recorder = Recorder()
    asyncio.run(coroutine_of(recorder))  # type: ignore[operator]
    return recorder.calls[0][2][-1]


def test_sign_options_never_include_what_was_not_asked() -> None:
    assert sent_options(lambda card: card.sign(b"x")) == {}
    options = sent_options(
        lambda card: card.sign(b"x", pin="ABC123", digest=True, allow_last_try=True)
    )
    assert options["pin"] == Variant("s", "ABC123")
    assert options["digest"] == Variant("b", True)
    assert options["allow-last-try"] == Variant("b", True)


def test_auth_options_always_name_the_hash() -> None:
    assert sent_options(lambda card: card.authenticate(b"x", "sha384")) == {
        "hash": Variant("s", "sha384")
    }
    assert sent_options(lambda card: card.authenticate(b"x", pin="1234"))["pin"] == Variant(
        "s", "1234"
    )


def test_pin_from_stdin_is_the_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("ABC123\r\nrest\n"))
    assert cli_pin.read_stdin_pin() == "ABC123"


@pytest.mark.parametrize("text", ["", "\nABC123\n"])
def test_empty_pin_on_stdin_is_a_pin_problem(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    with pytest.raises(cli_errors.PinInputError):
        cli_pin.read_stdin_pin()


def test_desktop_session_is_told_by_the_environment() -> None:
    assert cli_pin.in_desktop_session({"WAYLAND_DISPLAY": "wayland-0"})
    assert cli_pin.in_desktop_session({"DISPLAY": ":0"})
    assert not cli_pin.in_desktop_session({})


def card_status(which: str = "auth", **fields: Variant) -> Status:
    """A GetStatus answer for a card in the reader, ``fields`` changed in ``which``."""
    base = {"auth": 3, "sign": 5}[which]
    return Status.from_dbus(
        daemon_status(**{which: cert_status(**{"pin_tries_left": Variant("i", base), **fields})})
    )


def status_in(state: str) -> Status:
    return Status.from_dbus(daemon_status(state=Variant("s", state), reader=Variant("s", "")))


class FakeCard:
    """GetStatus answers in turn (the last one repeats) and the calls that used the PIN."""

    def __init__(self, *statuses: Status, failures: tuple[BaseException, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.failures = list(failures)
        self.sent: list[tuple[str | None, bool]] = []

    async def get_status(self) -> Status:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    async def operation(self, pin: str | None, allow_last_try: bool) -> str:
        self.sent.append((pin, allow_last_try))
        if self.failures:
            raise self.failures.pop(0)
        return "signed"


class Person:
    """A person at the terminal: the answers typed to input() and getpass(), and what was asked;
    standard input stays unread unless the test reads it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: str = "", pin: str = "") -> None:
        self.asked: list[str] = []
        self.stdin = io.StringIO("ABC123\n")
        monkeypatch.setattr("sys.stdin", self.stdin)

        def fake_input(prompt: str = "") -> str:
            self.asked.append("y/N")
            return answer

        def fake_getpass(prompt: str) -> str:
            self.asked.append(prompt)
            return pin

        monkeypatch.setattr("builtins.input", fake_input)
        monkeypatch.setattr(cli_pin.getpass, "getpass", fake_getpass)


def pin_call(card: FakeCard, which: str = "auth", **request: bool) -> str:
    return cli_pin.call_with_pin(
        cli_pin.PinRequest(which, **request), asyncio.run, card, card.operation
    )


TERMINAL = {"stdin_is_tty": True}
STDIN = {"from_stdin": True}
DESKTOP = {"desktop": True, "stdin_is_tty": True}


def test_last_try_on_a_terminal_is_asked_first_and_no_cancels(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person(monkeypatch, answer="n", pin="1234")
    card = FakeCard(card_status(pin_tries_left=Variant("i", 1)))
    with pytest.raises(cli_errors.CancelledByUserError) as raised:
        pin_call(card, **TERMINAL)
    assert person.asked == ["y/N"] and card.sent == []
    assert cli_errors.exit_code(raised.value) == ExitCode.CANCELLED
    err = capsys.readouterr().err
    assert err == (
        "Only one try is left for the user-authentication PIN: a wrong one locks it until it is "
        "reset at your municipal office.\n"
        "Use the last try? [y/N] "
    )


@pytest.mark.parametrize("answer", ["", "no", "N", "yes please"])
def test_anything_but_yes_keeps_the_last_try(monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    person = Person(monkeypatch, answer=answer, pin="ABC123")
    card = FakeCard(card_status("sign", pin_tries_left=Variant("i", 1)))
    with pytest.raises(cli_errors.CancelledByUserError):
        pin_call(card, "sign", **TERMINAL)
    assert person.asked == ["y/N"] and card.sent == []


@pytest.mark.parametrize("answer", ["y", "Y", "yes", " y "])
def test_yes_asks_the_pin_and_sends_it_for_the_last_try(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    person = Person(monkeypatch, answer=answer, pin="ABC123")
    card = FakeCard(card_status("sign", pin_tries_left=Variant("i", 1)))
    assert pin_call(card, "sign", **TERMINAL) == "signed"
    assert person.asked == ["y/N", cli_pin.prompt("sign")]
    assert card.sent == [("ABC123", True)]


def test_allow_last_try_on_a_terminal_needs_no_question(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person(monkeypatch, pin="1234")
    card = FakeCard(card_status(pin_tries_left=Variant("i", 1)))
    pin_call(card, allow_last_try=True, **TERMINAL)
    assert person.asked == [cli_pin.prompt("auth")] and card.sent == [("1234", True)]
    assert capsys.readouterr().err == (
        "1 try is left before the user-authentication PIN is locked.\n"
    )


def test_terminal_prompt_warns_of_few_tries_and_never_echoes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person(monkeypatch, pin="ABC123")
    card = FakeCard(card_status("sign", pin_tries_left=Variant("i", 2)))
    pin_call(card, "sign", **TERMINAL)
    assert person.asked == [
        "Signing password (6 to 16 characters: capital letters A-Z and digits 0-9, both used): "
    ]
    assert card.sent == [("ABC123", False)]
    captured = capsys.readouterr()
    assert captured.err == "2 tries are left before the signing password is locked.\n"
    assert "ABC123" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("which", "typed", "hint"),
    [
        ("auth", "１２３４", "It was typed in full-width characters: type it in half-width "
         "characters."),
        ("sign", "ＡＢＣ１２３", "It was typed in full-width characters: type it in half-width "
         "characters."),
        ("sign", "abc123", "The signing password uses capital letters (A-Z) and digits, and "
         "small letters were typed: check Caps Lock and type it in capitals."),
        ("auth", "12345", "That is not a valid user-authentication PIN: 4 digits."),
    ],
)  # fmt: skip
def test_input_method_slips_are_named_and_asked_again(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    which: str,
    typed: str,
    hint: str,
) -> None:
    right = {"auth": "1234", "sign": "ABC123"}[which]
    typed_in = iter([typed, right])
    monkeypatch.setattr(cli_pin.getpass, "getpass", lambda prompt: next(typed_in))
    card = FakeCard(card_status(which))
    assert pin_call(card, which, **TERMINAL) == "signed"
    assert card.sent == [(right, False)]  # the slip never reached the card
    assert capsys.readouterr().err == f"mncctl: {hint} No try was used.\n"


def test_after_a_few_slips_mncctl_gives_up_with_the_pin_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(
        cli_pin.getpass, "getpass", lambda prompt: asked.append(prompt) or "１２３４"
    )
    card = FakeCard(card_status())
    with pytest.raises(cli_errors.PinInputError) as raised:
        pin_call(card, **TERMINAL)
    assert len(asked) == cli_pin.SHAPE_ROUNDS == 3 and card.sent == []
    assert cli_errors.exit_code(raised.value) == ExitCode.PIN
    assert cli_errors.error_line(raised.value) == (
        "No valid user-authentication PIN was typed: cancelled. No try was used."
    )
    assert capsys.readouterr().err.count("full-width") == 3


@pytest.mark.parametrize("answer", ["", EOFError(), KeyboardInterrupt()])
def test_empty_terminal_answer_cancels(monkeypatch: pytest.MonkeyPatch, answer: object) -> None:
    def fake_getpass(_: str) -> str:
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    monkeypatch.setattr(cli_pin.getpass, "getpass", fake_getpass)
    card = FakeCard(card_status())
    with pytest.raises(cli_errors.CancelledByUserError):
        pin_call(card, **TERMINAL)
    assert card.sent == []


@pytest.mark.parametrize("answer", [EOFError(), KeyboardInterrupt()])
def test_end_of_input_at_the_question_cancels(
    monkeypatch: pytest.MonkeyPatch, answer: BaseException
) -> None:
    def fake_input(prompt: str = "") -> str:
        raise answer

    monkeypatch.setattr("builtins.input", fake_input)
    card = FakeCard(card_status(pin_tries_left=Variant("i", 1)))
    with pytest.raises(cli_errors.CancelledByUserError):
        pin_call(card, **TERMINAL)
    assert card.sent == []


def test_pin_stdin_at_the_last_try_is_refused_before_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    person = Person(monkeypatch)
    card = FakeCard(card_status("sign", pin_tries_left=Variant("i", 1)))
    with pytest.raises(cli_errors.LastTryRefused) as raised:
        pin_call(card, "sign", **STDIN)
    assert person.stdin.tell() == 0 and person.asked == [] and card.sent == []
    assert cli_errors.exit_code(raised.value) == ExitCode.PIN
    for terminal in (False, True):
        assert cli_errors.error_lines(raised.value, terminal=terminal) == [
            "Only one try is left for the signing password; a wrong one locks it until it is "
            "reset at your municipal office. To use it anyway, add --allow-last-try."
        ]


def test_pin_stdin_with_allow_last_try_sends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    person = Person(monkeypatch)
    card = FakeCard(card_status("sign", pin_tries_left=Variant("i", 1)))
    pin_call(card, "sign", allow_last_try=True, **STDIN)
    assert card.sent == [("ABC123", True)] and person.asked == []


def test_pin_stdin_with_tries_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    Person(monkeypatch)
    card = FakeCard(card_status("sign"))
    pin_call(card, "sign", **STDIN)
    assert card.sent == [("ABC123", False)]


UNUSABLE = [
    (status_in("no-card"), "auth", errors.NoCard, ExitCode.FAILED,
     "No My Number Card is in the reader: insert it and try again."),
    (status_in("no-reader"), "sign", errors.NoCard, ExitCode.FAILED,
     "No card reader is connected: connect one and insert your My Number Card."),
    (status_in("pcsc-unavailable"), "auth", errors.PcscUnavailable, ExitCode.FAILED,
     "The smart-card service pcscd is not running: install and start it with "
     "'sudo apt install pcscd && sudo systemctl enable --now pcscd.socket'."),
    (status_in("unknown-card"), "auth", errors.NotSupported, ExitCode.FAILED,
     "The card in the reader is not a My Number Card."),
    (status_in("unreadable-card"), "auth", errors.NoCard, ExitCode.FAILED,
     "The card in the reader could not be read: take it out and insert it again."),
    (card_status("auth", pin_tries_left=Variant("i", 0)), "auth", errors.PinBlocked,
     ExitCode.PIN, "The user-authentication PIN is locked: it was entered wrongly too many "
     "times. Have it reset at your municipal office (bring your My Number Card)."),
    (card_status("sign", pin_tries_left=Variant("i", 0)), "sign", errors.PinBlocked,
     ExitCode.PIN, "The signing password is locked: it was entered wrongly too many times. "
     "Have it reset at your municipal office (bring your My Number Card)."),
    (card_status("sign", present=Variant("b", False), pin_tries_left=Variant("i", -1)), "sign",
     errors.CertificateMissing, ExitCode.FAILED,
     "The card has no signing certificate: cards of children under 15 carry none, and one can "
     "be issued at your municipal office."),
    (card_status("auth", present=Variant("b", False)), "auth", errors.CertificateMissing,
     ExitCode.FAILED, "The card has no user-authentication certificate."),
    (Status.from_dbus(daemon_status(token=Variant("s", "android"))), "auth",
     errors.NotSupported, ExitCode.FAILED, "mncd cannot use a token of this kind (Android "
     "smartphone certificate): it serves the My Number Card itself."),
]  # fmt: skip


@pytest.mark.parametrize("mode", [TERMINAL, STDIN, DESKTOP, {}], ids=["tty", "stdin", "gui", "-"])
@pytest.mark.parametrize(("status", "which", "error", "code", "text"), UNUSABLE)
def test_a_pin_that_cannot_be_used_is_never_asked_for(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: dict[str, bool],
    status: Status,
    which: str,
    error: type[Exception],
    code: ExitCode,
    text: str,
) -> None:
    person = Person(monkeypatch, answer="y", pin="1234")
    card = FakeCard(status)
    with pytest.raises(error) as raised:
        pin_call(card, which, **mode)
    assert person.asked == [] and person.stdin.tell() == 0 and card.sent == []
    assert capsys.readouterr().err == ""  # not even the line about the PIN dialog
    assert cli_errors.exit_code(raised.value) == code
    assert cli_errors.error_lines(raised.value, terminal=True) == [text]  # one line


def test_a_card_being_read_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    Person(monkeypatch, pin="1234")
    reading = Status.from_dbus(
        daemon_status(auth=cert_status(source=Variant("s", "cache")), sign=Variant("a{sv}", {}))
    )
    assert cli_pin.usable_tries(reading, "sign") is None  # nothing known yet: no refusal
    card = FakeCard(reading, reading, card_status(pin_tries_left=Variant("i", 0)))
    with pytest.raises(errors.PinBlocked):
        pin_call(card, **TERMINAL)
    assert card.statuses == [card_status(pin_tries_left=Variant("i", 0))]
    # Today's daemon says "reading" until the card has been read.
    now_reading = Status.from_dbus(daemon_status(state=Variant("s", "reading")))
    assert cli_pin.being_read(now_reading) and cli_pin.usable_tries(now_reading, "auth") is None
    card = FakeCard(now_reading, card_status(pin_tries_left=Variant("i", 0)))
    with pytest.raises(errors.PinBlocked):
        pin_call(card, **TERMINAL)


def test_desktop_session_leaves_the_pin_to_the_daemon(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person(monkeypatch, pin="ABC123")
    card = FakeCard(card_status("sign"))
    assert pin_call(card, "sign", **DESKTOP) == "signed"
    assert person.asked == [] and card.sent == [(None, False)]
    assert capsys.readouterr().err == (
        "Waiting for you to enter the signing password in the PIN dialog…\n"
    )


NO_DIALOG = (
    "no PIN dialog could be shown (the pinentry program 'pinentry-gnome3' is not installed); "
    "pass the PIN in the pin option"
)


def test_no_pin_dialog_falls_back_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person(monkeypatch, pin="1234")
    monkeypatch.setattr(cli_pin, "missing_pinentry", lambda: None)
    card = FakeCard(card_status(), failures=(errors.PinRequired(NO_DIALOG),))
    assert pin_call(card, **DESKTOP) == "signed"
    assert person.asked == [cli_pin.prompt("auth")]
    assert card.sent == [(None, False), ("1234", False)]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("Waiting for you to enter the user-authentication PIN")
    assert lines[1:] == ["mncctl: no PIN dialog could be shown; asking here instead."]


def test_the_fallback_names_a_pinentry_program_that_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_pin.shutil, "which", lambda program: None)
    assert cli_pin.fallback_line(errors.PinRequired(NO_DIALOG)).startswith(
        "mncctl: no PIN dialog could be shown because "
    )
    monkeypatch.setattr(cli_pin.shutil, "which", lambda program: f"/usr/bin/{program}")
    assert cli_pin.fallback_line(errors.PinRequired(NO_DIALOG)) == (
        "mncctl: no PIN dialog could be shown; asking here instead."
    )


def test_no_pin_dialog_falls_back_to_the_last_try_question(monkeypatch: pytest.MonkeyPatch) -> None:
    person = Person(monkeypatch, answer="n", pin="1234")
    card = FakeCard(
        card_status(pin_tries_left=Variant("i", 1)), failures=(errors.PinRequired(NO_DIALOG),)
    )
    with pytest.raises(cli_errors.CancelledByUserError):
        pin_call(card, **DESKTOP)
    assert person.asked == ["y/N"] and card.sent == [(None, False)]


def test_no_pin_dialog_and_no_terminal_is_a_pin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    person = Person(monkeypatch, pin="1234")
    card = FakeCard(card_status(), failures=(errors.PinRequired(NO_DIALOG),))
    with pytest.raises(errors.PinRequired) as raised:
        pin_call(card, desktop=True)
    assert person.asked == [] and card.sent == [(None, False)]
    assert cli_errors.exit_code(raised.value) == ExitCode.PIN
    assert cli_errors.error_lines(raised.value, terminal=False) == [
        "A PIN is needed and no PIN dialog could be shown: run mncctl in a terminal to be "
        "asked there, or pass it with --pin-stdin."
    ]


def test_no_terminal_and_no_stdin_sends_no_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    person = Person(monkeypatch, pin="1234")
    card = FakeCard(card_status(pin_tries_left=Variant("i", 1)))
    pin_call(card)
    assert person.asked == [] and person.stdin.tell() == 0 and card.sent == [(None, False)]


LAST_TRY_REFUSAL = (
    "only one try is left for the signing password: a wrong PIN would block it until it is "
    "reset at the municipal office; set allow-last-try to send it anyway "
    "(残り1回です。間違えるとロックされます)"
)


@pytest.mark.parametrize("terminal", [False, True])
def test_last_try_refusal_names_mncctls_flag(terminal: bool) -> None:
    lines = lines_for(ERR + "PinRequired", LAST_TRY_REFUSAL, terminal=terminal)
    assert lines == [
        "Only one try is left; a wrong PIN locks it until it is reset at your municipal "
        "office. To use it anyway, add --allow-last-try."
    ]
    assert "terminal" not in lines[0] and "allow-last-try" in lines[0]


def test_pin_required_on_a_terminal_does_not_say_run_it_in_one() -> None:
    lines = lines_for(ERR + "PinRequired", "the card needs the PIN for this", terminal=True)
    assert lines == ["A PIN is needed and no PIN dialog could be shown: pass it with --pin-stdin."]


# ---------------------------------------------------------------------------------------------
# watch lines

WHEN = dt.datetime(2025, 11, 25, 13, 0, 1, tzinfo=JST)


def signal(interface: str, member: str, body: list) -> Event | None:
    path = "/org/freedesktop/DBus" if interface == "org.freedesktop.DBus" else api.OBJECT_PATH
    return client.event_from_signal(interface, path, member, body)


def test_signal_line() -> None:
    event = signal(api.INTERFACE, "CardInserted", ["ACS ACR39U 00 00"])
    assert event == Event("CardInserted", ["ACS ACR39U 00 00"])
    assert (
        output.format_event(WHEN, event)
        == '2025-11-25T13:00:01+09:00 CardInserted "ACS ACR39U 00 00"'
    )


def test_certificate_status_line() -> None:
    event = signal(api.INTERFACE, "CertificateStatusChanged", ["sign", "expiring"])
    assert event is not None
    assert output.format_event(WHEN, event).endswith(' CertificateStatusChanged "sign" "expiring"')


def test_properties_changed_line() -> None:
    body = [
        api.INTERFACE,
        {"State": Variant("s", "no-card"), "CardPresent": Variant("b", False)},
        ["Readers"],
    ]
    event = signal(connection.PROPERTIES_INTERFACE, "PropertiesChanged", body)
    assert event is not None
    line = output.format_event(WHEN, event)
    assert line == (
        '2025-11-25T13:00:01+09:00 PropertiesChanged State="no-card" CardPresent=false '
        'Readers="(invalidated)"'
    )


def test_watch_lines_for_people_are_sentences_in_japans_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    utc = dt.datetime(2025, 11, 25, 15, 30, 1, tzinfo=dt.UTC)  # 2025-11-26 00:30:01 in Japan
    inserted = Event("CardInserted", ["ACS ACR39U 00 00"])
    assert output.event_lines(utc, inserted) == [
        "2025-11-26 00:30:01 A card was inserted in ACS ACR39U 00 00."
    ]
    changed = Event("PropertiesChanged", {"State": "no-card", "CardPresent": False})
    assert output.event_lines(utc, changed) == [
        "2025-11-26 00:30:01 Now: no card in the reader: insert your My Number Card."
    ]
    assert output.event_lines(utc, Event("PropertiesChanged", {"CardPresent": True})) == []
    monkeypatch.setenv("LANGUAGE", "ja")
    expiring = Event("CertificateStatusChanged", ["sign", "expiring"])
    assert output.event_lines(utc, expiring) == [
        "2025-11-26 00:30:01 署名用電子証明書: まもなく有効期限切れ。"
    ]
    (line,) = output.event_lines(utc, changed, width=40)
    first, *rest = line.splitlines()
    assert first.startswith("2025-11-26 00:30:01 現在の状態: ")
    assert rest and all(part.startswith(" " * 20) and part[20] != " " for part in rest)


def test_properties_of_other_interfaces_are_skipped() -> None:
    body = ["org.example.Other", {"X": Variant("i", 1)}, []]
    assert signal(connection.PROPERTIES_INTERFACE, "PropertiesChanged", body) is None


def test_daemon_start_and_stop() -> None:
    started = signal("org.freedesktop.DBus", "NameOwnerChanged", [api.BUS_NAME, "", ":1.5"])
    stopped = signal("org.freedesktop.DBus", "NameOwnerChanged", [api.BUS_NAME, ":1.5", ""])
    assert started == Event("DaemonStarted", [])
    assert stopped == Event("DaemonStopped", [])


def test_json_event_line() -> None:
    line = output.format_event(WHEN, Event("CardRemoved", ["リーダー"]), as_json=True)
    assert "リーダー" in line
    assert json.loads(line) == {
        "time": "2025-11-25T13:00:01+09:00",
        "event": "CardRemoved",
        "args": ["リーダー"],
    }


# ---------------------------------------------------------------------------------------------
# local verification


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1A2B)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("hash_name", "algorithm"),
    [("sha256", hashes.SHA256()), ("sha384", hashes.SHA384()), ("sha512", hashes.SHA512())],
)
def test_rsa_pkcs1_signature_verifies(
    rsa_key: rsa.RSAPrivateKey, hash_name: str, algorithm: hashes.HashAlgorithm
) -> None:
    cert = self_signed(rsa_key)
    data = b"challenge" * 3
    signature = rsa_key.sign(data, padding.PKCS1v15(), algorithm)
    assert files.verify_signature(cert, signature, data, hash_name)
    assert not files.verify_signature(cert, signature, data + b"!", hash_name)


def test_rsa_signature_over_a_local_digest_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = self_signed(rsa_key)
    digest = hashlib.sha256(b"big file").digest()
    signature = rsa_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    assert files.verify_signature(cert, signature, digest, "sha256", prehashed=True)
    assert not files.verify_signature(cert, signature, digest, "sha256")


def test_ecdsa_signature_verifies_in_der_form(ec_key: ec.EllipticCurvePrivateKey) -> None:
    cert = self_signed(ec_key)
    data = b"challenge"
    der = ec_key.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert files.verify_signature(cert, der, data, "sha256")
    assert not files.verify_signature(cert, raw, data, "sha256")  # the API returns DER
    assert not files.verify_signature(cert, der, b"other", "sha256")


def test_unreadable_certificate_is_a_verification_error() -> None:
    with pytest.raises(cli_errors.VerificationError):
        files.verify_signature(b"not a certificate", b"sig", b"data", "sha256")


def test_certificate_summary(rsa_key: rsa.RSAPrivateKey) -> None:
    assert output.certificate_summary(self_signed(rsa_key)).startswith("serial 1A2B, expires ")
    assert output.certificate_summary(b"junk") == ""
