"""Unit tests of ``mncctl pin``, ``cert``, ``check`` and ``doctor`` pieces that need no bus, daemon
or card: what they print for given answers, and how the doctor judges what it found."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

import pytest
from dbus_next import Variant

from mncd import errors
from mncd.cli import cert, check, doctor, pin, pin_command
from mncd.cli.errors import CancelledByUserError, UsageError
from mncd.cli.main import build_parser
from mncd.cli.output import display_width
from mncd.client import PersonalDataCheck, PinStatus
from mncd.core.events import ReaderDevice
from mncd.jpki.calendar import JAPAN
from mncd.jpki.details import describe, japan_days_left, personal_data
from mncd.vcard import pki
from mncd.vcard.profile import CardProfile


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    """mncctl's texts in English (the msgids), whatever the locale of the test run."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LANGUAGE", "")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)


@pytest.fixture(scope="module")
def test_pki() -> pki.CardPki:
    return pki.generate(CardProfile(not_after="2029-05-31", not_before="2024-06-01"))


def counters(auth: int, sign: int | None, card_info: int) -> PinStatus:
    def counter(tries: int | None, most: int) -> Variant:
        return Variant(
            "a{sv}",
            {
                "present": Variant("b", tries is not None),
                "tries_left": Variant("i", -1 if tries is None else tries),
                "max_tries": Variant("i", most),
            },
        )

    return PinStatus.from_dbus(
        {
            "reader": Variant("s", "ACS ACR39U 00 00"),
            "auth": counter(auth, 3),
            "sign": counter(sign, 5),
            "card-info": counter(card_info, 3),
        }
    )


def test_pin_status_lines():
    text = pin_command.format_pin_status(counters(3, None, 0))
    assert text.splitlines() == [
        "PIN tries left",
        "  Reader: ACS ACR39U 00 00",
        "  User-authentication PIN: 3/3",
        "  Signing password: not on this card",
        "  Card-info PIN: 0/3 (locked: have it reset at your municipal office)",
    ]


def test_a_pin_that_cannot_be_changed_is_refused_before_asking():
    with pytest.raises(errors.PinBlocked):
        pin_command.changeable_tries(counters(3, 5, 0), "card-info")
    with pytest.raises(errors.CertificateMissing):
        pin_command.changeable_tries(counters(3, None, 3), "sign")
    assert pin_command.changeable_tries(counters(1, 5, 3), "auth") == 1


def test_the_new_pin_is_checked_and_repeated_on_the_terminal(monkeypatch):
    typed = iter(["12345", "5678", "5679", "1234", "1234", "5678", "5678"])
    monkeypatch.setattr(pin.getpass, "getpass", lambda prompt: next(typed))
    monkeypatch.setattr(pin_command.sys, "stderr", io.StringIO())
    with pytest.raises(CancelledByUserError):
        # malformed, then a mismatch, then the current PIN again: three rounds, no PIN.
        pin_command.ask_new_pin("auth", "1234")
    said = pin_command.sys.stderr.getvalue()
    malformed = "The new user-authentication PIN: That is not a valid user-authentication PIN"
    assert f"{malformed}: 4 digits." in said
    assert "The two entries differ" in said
    assert "same as the current one" in said
    assert pin_command.ask_new_pin("auth", "1234") == "5678"


def test_the_note_of_pin_changes_is_private_and_forgets_a_card(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert not pin_command.changed_before("aa")
    pin_command.remember_change("aa")
    pin_command.remember_change("bb")
    pin_command.remember_change("aa")  # once
    note = tmp_path / "state" / "mncd" / "cli-pin-changed"
    assert note.read_text() == "aa\nbb\n"
    assert note.stat().st_mode & 0o777 == 0o600 and note.parent.stat().st_mode & 0o777 == 0o700
    pin_command.forget_change("aa")
    assert note.read_text() == "bb\n"
    assert not pin_command.changed_before("aa") and pin_command.changed_before("bb")
    assert [p.name for p in note.parent.iterdir()] == ["cli-pin-changed"]  # no temporary left


def test_check_says_kinds_never_values():
    lines = check.describe(PersonalDataCheck(False, ("address", "sex"), "invalidated"))
    assert lines[0] == (
        "Your signing certificate no longer matches your card: the address, sex differ."
    )
    assert "municipal office" in lines[1]
    assert "東京" not in "".join(lines)  # which kinds differ, never their values
    assert check.describe(PersonalDataCheck(True, (), "valid"))[0].startswith(
        "Your signing certificate matches"
    )


def test_details_in_japans_calendar(test_pki):
    details = describe(test_pki.auth_certificate)
    assert details.not_after == dt.datetime(2029, 5, 31, 14, 59, 59, tzinfo=dt.UTC)
    # 2029-05-30 15:30 UTC is already the 31st in Japan: the last day, 0 days left.
    assert details.days_left(dt.datetime(2029, 5, 30, 15, 30, tzinfo=dt.UTC)) == 0
    assert details.days_left(dt.datetime(2029, 5, 30, 14, 30, tzinfo=dt.UTC)) == 1
    assert japan_days_left(details.not_after, details.not_after + dt.timedelta(seconds=1)) == -1
    lines = cert.format_details("auth", details, None, now=dt.datetime(2029, 5, 1, tzinfo=dt.UTC))
    until = next(line for line in lines if "Valid until" in line)
    assert until.endswith("2029-05-31 23:59:59 JST (30 days left)")
    assert details.not_before.astimezone(JAPAN).date() == dt.date(2024, 6, 1)


def test_personal_data_are_withheld_off_a_terminal(test_pki):
    details = describe(test_pki.sign_certificate)
    person = personal_data(test_pki.sign_certificate)
    shown = "\n".join(cert.format_details("sign", details, person))
    assert CardProfile().address in shown and "  Sex          female" in shown
    assert "1990-04-01" in shown and "Chiyoda-ku" in shown
    hidden = "\n".join(cert.format_details("sign", details, None, withheld=True))
    assert CardProfile().address not in hidden and "Chiyoda" not in hidden
    assert hidden.count("shown only on a terminal") == 2
    as_json = cert.details_json(details, None, withheld=True)
    assert as_json["subject"] is None and as_json["personal_data"] is None
    assert repr(person) == "PersonalDetails(<personal data>)"


@pytest.mark.parametrize("language", ["", "ja"])
def test_values_line_up_on_a_terminal(test_pki, monkeypatch, language):
    """Labels in English or Japanese (wide characters): values start in one column of the
    terminal all the same."""
    monkeypatch.setenv("LANGUAGE", language)
    details = describe(test_pki.sign_certificate)
    lines = cert.format_details("sign", details, personal_data(test_pki.sign_certificate))
    assert (lines[0] == "Signing certificate") == (language == "")
    columns = set()
    for line in lines[1:]:
        label = re.match(r"  \S+(?: \S+)*  +", line)  # labels have single spaces, then padding
        assert label is not None, line
        columns.add(display_width(label.group(0)))
    assert len(columns) == 1, lines


def test_export_never_overwrites_without_force(tmp_path: Path):
    target = tmp_path / "cert.pem"
    cert.write_new(target, b"one", private=True, replace=False)
    assert target.read_bytes() == b"one" and oct(target.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(UsageError):
        cert.write_new(target, b"two", private=True, replace=False)
    assert target.read_bytes() == b"one"
    cert.write_new(target, b"two", private=False, replace=True)
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem"]


def test_export_is_pem_unless_der_is_asked():
    parser = build_parser()
    assert parser.parse_args(["cert", "export", "auth", "-o", "x"]).der is False
    assert parser.parse_args(["cert", "export", "auth", "-o", "x", "--der"]).der is True
    with pytest.raises(SystemExit):
        parser.parse_args(["cert", "export", "auth", "-o", "x", "--der", "--pem"])


def reader(name: str, ccid: bool) -> ReaderDevice:
    return ReaderDevice(f"/sys/devices/{name}", 0x054C, 0x06C1, name, ccid)


def test_doctor_judges_readers():
    rcs380 = reader("Sony PaSoRi RC-S380", ccid=False)
    only_rcs380 = doctor.check_readers(doctor.PcscFacts(True, ()), [rcs380])
    assert [(f.check, f.level) for f in only_rcs380] == [
        ("readers", "fail"),
        ("usb-readers", "fail"),
    ]
    assert "RC-S300" in only_rcs380[1].text
    beside = doctor.check_readers(doctor.PcscFacts(True, ("ACS 00 00",)), [rcs380])
    assert [(f.check, f.level) for f in beside] == [("readers", "ok"), ("usb-readers", "warn")]
    driverless = doctor.check_readers(doctor.PcscFacts(True, ()), [reader("CCID One", True)])
    assert "libccid" in driverless[0].text and driverless[1].level == "ok"
    assert doctor.check_readers(doctor.PcscFacts(), None)[0].level == "skip"


def test_doctor_finds_the_unit_where_systemd_looks(tmp_path: Path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert doctor.check_unit(env).level in ("warn", "ok")  # system dirs may hold one
    unit = tmp_path / "cfg" / "systemd" / "user" / "mncd.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    found = doctor.check_unit(env)
    assert found.level == "ok" and str(unit) in found.text


def test_doctor_names_a_missing_pinentry(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "mncd").mkdir()
    (tmp_path / "mncd" / "config.toml").write_text('[pinentry]\nprogram = "pinentry-qt"\n')
    missing = doctor.check_pinentry(lambda program: None)
    assert missing.level == "fail" and "pinentry-qt" in missing.text
    assert str(tmp_path / "mncd" / "config.toml") in missing.text
    found = doctor.check_pinentry(lambda program: f"/usr/bin/{program}")
    assert found.level == "ok" and found.text == "pinentry-qt (/usr/bin/pinentry-qt)"
