"""``mncctl check``: CheckPersonalData for people, against the real daemon and virtual card.
It asks for the card-info PIN, and for the signing password only when the daemon needs it; it
says which kinds of data differ (never their values) and what to do."""

from __future__ import annotations

from busstack import daemon_on_private_bus, status
from faultkit import verifies_with_pin
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state
from test_mncctl_pin_change import mncctl

CARD_INFO_PROMPT = "Card-info PIN (4 digits):"
SIGN_PROMPT = "Signing password (6 to 16 characters"


def test_matching_data(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "check", "--pin-stdin", stdin="1234\nABC123\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Your signing certificate matches the name, address, birth")
    assert status(daemon.bus.address)["sign"]["state"] == "valid"


def test_differing_data_says_what_kind_and_what_to_do(daemon, insert_card):
    moved = "大阪府大阪市北区梅田一丁目二番三号"
    card = insert_card(cert_address=moved, cert_name="旧姓\u3000花子")
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "check", "--pin-stdin", stdin="1234\nABC123\n")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Your signing certificate no longer matches your card: the name, address differ."
    )
    assert "Get a new one issued at your municipal office" in lines[1]
    for value in (moved, "梅田", card.profile.address, "旧姓", "花子"):
        assert value not in result.stdout + result.stderr
    assert status(daemon.bus.address)["sign"]["state"] == "invalidated"


def test_on_a_terminal_the_signing_password_is_asked_only_when_needed(daemon, card, terminals):
    address = daemon.bus.address
    wait_state(address, "card-present")
    assert status(address)["sign"]["certificate_held"] is False  # GetStatus, read by busctl
    term = terminals(address, "check")
    term.wait(CARD_INFO_PROMPT)
    term.type("1234", "Enter")
    term.wait(SIGN_PROMPT)  # the daemon has not read the certificate since the insertion
    term.type("ABC123", "Enter")
    screen = term.wait("[exit ")
    assert "[exit 0]" in screen and "matches" in screen, screen
    assert "1234" not in screen and "ABC123" not in screen
    # Now the daemon holds the certificate (read with the password): only the card-info PIN.
    assert status(address)["sign"]["certificate_held"] is True
    card.commands(clear=True)
    second = terminals(address, "check")
    second.wait(CARD_INFO_PROMPT)
    second.type("1234", "Enter")
    screen = second.wait("[exit ")
    assert "[exit 0]" in screen and SIGN_PROMPT not in screen, screen
    assert verifies_with_pin(card.commands()) == 1


def test_a_wrong_card_info_pin(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    result = mncctl(daemon.bus.address, "check", "--pin-stdin", stdin="9999\nABC123\n")
    assert result.returncode == 4
    assert "2 tries left" in result.stderr and "9999" not in result.stderr
    assert card.tries()["card_info"] == 2


def test_without_the_signing_password_on_stdin_when_it_is_needed(daemon, card):
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    result = mncctl(daemon.bus.address, "check", "--pin-stdin", stdin="1234\n")
    assert result.returncode == 4
    assert "give it on the second line of standard input" in result.stderr
    assert verifies_with_pin(card.commands()) == 0


def test_a_card_without_signing_certificate_is_not_asked(daemon, insert_card, terminals):
    card = insert_card(sign_certificate=False)
    wait_state(daemon.bus.address, "card-present")
    term = terminals(daemon.bus.address, "check")
    screen = term.wait("[exit ")
    assert "[exit 1]" in screen and "The card has no signing certificate to check" in screen
    assert CARD_INFO_PROMPT not in screen
    assert verifies_with_pin(card.commands()) == 0


def test_in_a_desktop_session_the_daemons_dialog_asks(tmp_path, sandbox, card):
    entry = ScriptedPinentry(tmp_path / "pinentry", ["ABC123", "1234"])
    env = {**sandbox.env, **config_with(tmp_path, entry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    with daemon_on_private_bus(tmp_path, env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = mncctl(daemon.bus.address, "check", DISPLAY=":0")
    assert result.returncode == 0, result.stderr
    assert "Waiting for you to enter the card-info PIN" in result.stderr
    assert "matches" in result.stdout
    assert [str(e["text"]) for e in entry.commands("SETPROMPT")] == [
        "signing password",
        "card-info PIN",
    ]


def test_a_card_inserted_again_needs_the_password_again(daemon, insert_card):
    """The signing certificate is held only while the card stays in: after it was taken out,
    --pin-stdin without the second line is refused before any PIN reaches the card."""
    card = insert_card()
    address = daemon.bus.address
    wait_state(address, "card-present")
    assert mncctl(address, "check", "--pin-stdin", stdin="1234\nABC123\n").returncode == 0
    assert status(address)["sign"]["certificate_held"] is True
    assert mncctl(address, "check", "--pin-stdin", stdin="1234\n").returncode == 0
    card.remove()
    wait_state(address, "no-card")
    card = insert_card()
    wait_state(address, "card-present")
    assert status(address)["sign"]["certificate_held"] is False
    card.commands(clear=True)
    result = mncctl(address, "check", "--pin-stdin", stdin="1234\n")
    assert result.returncode == 4
    assert "give it on the second line of standard input" in result.stderr
    assert verifies_with_pin(card.commands()) == 0  # no PIN reached the card


def test_a_signing_certificate_renewed_after_a_move_is_read_and_used(daemon, insert_card, tmp_path):
    """After a move the office writes a new signing certificate: the first signature reads it
    (after the password) and signs with it; before, only the certificate known to be on the
    card was refused without asking."""
    from cryptography import x509
    from pdfkit import make_pdf
    from test_documents import ca_file, pdfsig

    address = daemon.bus.address
    card = insert_card(cert_address="大阪府大阪市北区梅田一丁目二番三号")
    wait_state(address, "card-present")
    assert mncctl(address, "check", "--pin-stdin", stdin="1234\nABC123\n").returncode == 1
    old = status(address)["sign"]
    assert old["state"] == "invalidated" and old["certificate_held"]
    source = make_pdf(tmp_path / "申請書.pdf")
    output = tmp_path / "申請書-signed.pdf"
    # The invalidated certificate was read in this insertion: refused before any password.
    refused = mncctl(address, "sign", "--pdf", str(source), "-o", str(output), "--pin-stdin",
                     stdin="")  # fmt: skip
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "invalidated" in refused.stderr and not output.exists()

    revoked = x509.load_der_x509_certificate(card.certificates()["sign"])
    card.remove()
    card.control.renew_signing_certificate(card.name)
    card.reinsert()
    wait_state(address, "card-present")
    before = status(address)["sign"]
    assert before["state"] == "invalidated" and not before["certificate_held"]
    shown = mncctl(address, "status").stdout
    assert "mncctl cert show sign" in shown and "reads the new one" in shown

    signed = mncctl(address, "sign", "--pdf", str(source), "-o", str(output), "--pin-stdin",
                    stdin="ABC123\n")  # fmt: skip
    assert signed.returncode == 0, signed.stdout + signed.stderr
    report = pdfsig(output)
    assert "Signature Validation: Signature is Valid." in report, report
    new = x509.load_der_x509_certificate(card.certificates()["sign"])
    assert common_name(new) != common_name(revoked)
    assert common_name(new) in report and common_name(revoked) not in report
    verified = mncctl(address, "verify", str(output), "--ca", str(ca_file(card, tmp_path)))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"serial {new.serial_number:X}," in verified.stdout, verified.stdout
    assert f"{revoked.serial_number:X}" not in verified.stdout
    now = status(address)["sign"]
    assert now["state"] == "valid" and now["fingerprint"] != old["fingerprint"]
    assert (
        now["previous_state"] == "invalidated" and now["previous_fingerprint"] == old["fingerprint"]
    )
    assert now["serial"] != old["serial"]


def common_name(certificate) -> str:
    from cryptography.x509.oid import NameOID

    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
