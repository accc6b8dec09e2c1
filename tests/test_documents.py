"""Signed documents (mncctl sign --pdf / --cms, mncctl verify) on the real stack: the virtual
card, the daemon on a private bus, and third-party checks (pdfsig, qpdf, openssl, pyHanko)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import cms
from busstack import daemon_on_private_bus
from faultkit import SIGN as SIGN_COMMAND
from faultkit import verifies_with_pin
from pdfkit import append_revision, make_pdf, sign_with_software_key
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state

MNCCTL = str(Path(sys.executable).with_name("mncctl"))


JAPANESE = "ja_JP.UTF-8"
#: Kana and kanji.
JAPANESE_TEXT = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")


def mncctl(
    address: str,
    *args: str,
    stdin: str | None = None,
    display: str | None = None,
    lang: str = "C.UTF-8",
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address, "LANG": lang, "LANGUAGE": ""}
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "LC_ALL", "LC_MESSAGES"):
        env.pop(name, None)
    if display:
        env["DISPLAY"] = display
    return subprocess.run(
        [MNCCTL, *args], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def daemon(tmp_path, sandbox):
    (tmp_path / "bus").mkdir()
    with daemon_on_private_bus(tmp_path / "bus", sandbox.env) as process:
        yield process
    assert "Traceback" not in process.log


def signatures_sent(commands: list[str]) -> int:
    return sum(1 for command in commands if command.upper().startswith(SIGN_COMMAND))


def ca_file(card, tmp_path: Path) -> Path:
    """The virtual card's signing CA, as mncctl verify --ca takes it."""
    path = tmp_path / "sign-ca.der"
    path.write_bytes(card.certificates()["sign-ca"])
    return path


def sign_pdf(
    daemon, card, source: Path, output: Path, *extra: str, lang: str = "C.UTF-8"
) -> subprocess.CompletedProcess:
    return mncctl(
        daemon.bus.address, "sign", "--pdf", str(source), "-o", str(output), "--pin-stdin",
        *extra, stdin=card.profile.sign_password + "\n", lang=lang,
    )  # fmt: skip


def pdfsig(path: Path) -> str:
    done = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def signature_dictionaries(path: Path) -> list[dict[str, object]]:
    """Every /Sig dictionary of the file, as pyHanko reads it."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    with path.open("rb") as stream:
        reader = PdfFileReader(stream)
        result = []
        for embedded in reader.embedded_signatures:
            sig = embedded.sig_object
            result.append({key[1:]: sig.raw_get(key) for key in sig})
        return result


async def pyhanko_validate(path: Path, ca: bytes) -> list[object]:
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca)])
    with path.open("rb") as stream:
        reader = PdfFileReader(stream)
        return [
            await async_validate_pdf_signature(embedded, signer_validation_context=context)
            for embedded in reader.embedded_signatures
        ]


# -- PDF -----------------------------------------------------------------------------------------


def test_pdf_signature_follows_the_ministrys_rules(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "申請書.pdf")
    before = source.read_bytes()
    output = tmp_path / "signed.pdf"
    card.commands(clear=True)
    result = sign_pdf(daemon, card, source, output, "--reason", "登記申請", "--location", "東京")
    assert result.returncode == 0, result.stderr
    assert card.profile.sign_password not in result.stdout + result.stderr
    assert f"/Name: {card.profile.name}" in result.stdout
    # One VERIFY, one signature; IN untouched; OUT private (it carries the certificate).
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 1
    assert source.read_bytes() == before
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    data = output.read_bytes()
    assert data.startswith(before)  # an incremental update

    (sig,) = signature_dictionaries(output)
    assert sig["Type"] == "/Sig"
    assert sig["SubFilter"] == "/adbe.pkcs7.detached"
    assert sig["Name"] == card.profile.name
    assert sig["Reason"] == "登記申請" and sig["Location"] == "東京"
    assert re.fullmatch(r"D:\d{14}\+09'00'", str(sig["M"].original_bytes.decode()))
    start, first, second, rest = (int(n) for n in sig["ByteRange"])
    assert start == 0 and second + rest == len(data)
    hole = data[first:second]
    assert hole.startswith(b"<") and hole.endswith(b">")  # exactly the hex value of /Contents
    contents = bytes.fromhex(hole[1:-1].decode())
    info = cms.ContentInfo.load(contents.rstrip(b"\0"))
    assert contents[len(info.dump()) :].strip(b"\0") == b""  # padded with 00 only
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    (signer,) = signed["signer_infos"]
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_rsa"
    attributes = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    assert attributes["content_type"] == "data"
    covered = data[:first] + data[second:]
    assert attributes["message_digest"] == hashlib.sha256(covered).digest()
    certificates = {c.chosen.dump() for c in signed["certificates"]}
    pki = card.certificates()
    assert certificates == {pki["sign"], pki["sign-ca"]}

    # Third parties: poppler, qpdf, pyHanko.
    report = pdfsig(output)
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Total document signed" in report and "Not total" not in report
    assert subprocess.run(["qpdf", "--check", str(output)], capture_output=True).returncode == 0
    (status,) = asyncio.run(pyhanko_validate(output, pki["sign-ca"]))
    assert status.intact and status.valid and status.trusted
    assert status.coverage.name == "ENTIRE_FILE"

    # mncctl verify: anchored with the card's CA; not anchored without it.
    ca = ca_file(card, tmp_path)
    verified = mncctl(daemon.bus.address, "verify", str(output), "--ca", str(ca))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signed by:  {card.profile.name}" in verified.stdout
    assert "covers:     the whole file" in verified.stdout
    assert "Revocation was not checked" in verified.stdout
    unanchored = mncctl(daemon.bus.address, "verify", str(output))
    assert unanchored.returncode == 8, unanchored.stdout
    assert "not anchored" in unanchored.stdout


def test_pades_signature_validates_everywhere(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "contract.pdf")
    output = tmp_path / "contract-pades.pdf"
    result = sign_pdf(daemon, card, source, output, "--pades", "--name", "Taro Yamada")
    assert result.returncode == 0, result.stderr
    (sig,) = signature_dictionaries(output)
    assert sig["SubFilter"] == "/ETSI.CAdES.detached" and sig["Name"] == "Taro Yamada"
    report = pdfsig(output)
    assert "Signature is Valid" in report and "Total document signed" in report, report
    (status,) = asyncio.run(pyhanko_validate(output, card.certificates()["sign-ca"]))
    assert status.bottom_line and status.coverage.name == "ENTIRE_FILE"
    verified = mncctl(
        daemon.bus.address, "verify", str(output), "--ca", str(ca_file(card, tmp_path))
    )
    assert verified.returncode == 0, verified.stdout


def test_a_second_signature_keeps_the_first_valid(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "form.pdf")
    first, second = tmp_path / "first.pdf", tmp_path / "second.pdf"
    sign_with_software_key(source, first)  # someone else signed it before
    card.commands(clear=True)
    assert sign_pdf(daemon, card, first, second).returncode == 0
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 1
    report = pdfsig(second)
    assert report.count("Signature is Valid") == 2, report
    assert "Not total document signed" in report and "Total document signed" in report
    statuses = asyncio.run(pyhanko_validate(second, card.certificates()["sign-ca"]))
    assert [s.intact and s.valid for s in statuses] == [True, True]
    assert statuses[0].modification_level.name in ("LTA_UPDATES", "FORM_FILLING")
    verified = mncctl(
        daemon.bus.address, "verify", str(second), "--ca", str(ca_file(card, tmp_path))
    )
    # The software signer is anchored nowhere: intact, but not anchored (8).
    assert verified.returncode == 8, verified.stdout
    assert "later revisions only add signatures" in verified.stdout
    # Revision 1 is the unsigned form, 2 the first signature's, 3 ours (the whole file).
    assert "covers:     revision 2 of 3" in verified.stdout
    assert "covers:     the whole file" in verified.stdout
    assert verified.stdout.count("INVALID") == 0


@pytest.mark.parametrize("damage", ["tampered", "appended", "truncated"])
def test_damage_after_signing_is_reported_by_mncctl_and_pdfsig(daemon, card, tmp_path, damage):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "in.pdf", text="Pay 1000 yen")
    output = tmp_path / "out.pdf"
    assert sign_pdf(daemon, card, source, output).returncode == 0
    data = output.read_bytes()
    if damage == "tampered":
        output.write_bytes(data.replace(b"Pay 1000 yen", b"Pay 9000 yen"))
    elif damage == "appended":
        append_revision(output)
    else:
        output.write_bytes(data[: len(data) - 300])
    report = pdfsig(output)
    verified = mncctl(
        daemon.bus.address, "verify", str(output), "--ca", str(ca_file(card, tmp_path))
    )
    assert verified.returncode == 7, verified.stdout + verified.stderr
    assert "result: INVALID" in verified.stdout
    if damage == "tampered":
        assert "Digest Mismatch" in report, report
        assert "the signed bytes were changed" in verified.stdout
    elif damage == "appended":
        assert "Signature is Valid" in report and "Not total document signed" in report, report
        assert "the document was changed after this signature" in verified.stdout
    else:
        assert "Total document signed" not in report or "Signature is Valid" not in report, report


def test_cms_signature_verifies_with_openssl(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    document = tmp_path / "report.txt"
    document.write_text("報告書 / report\n")
    card.commands(clear=True)
    result = mncctl(
        daemon.bus.address, "sign", "--cms", str(document), "--pin-stdin",
        stdin=card.profile.sign_password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 1
    p7s = Path(f"{document}.p7s")
    assert stat.S_IMODE(p7s.stat().st_mode) == 0o600
    info = cms.ContentInfo.load(p7s.read_bytes())
    (signer,) = info["content"]["signer_infos"]
    attributes = {a["type"].native for a in signer["signed_attrs"]}
    assert {"content_type", "message_digest", "signing_time"} <= attributes
    assert info["content"]["encap_content_info"]["content"].native is None  # detached
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_text(
        subprocess.run(
            ["openssl", "x509", "-inform", "DER", "-in", str(ca_file(card, tmp_path))],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    verify = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(p7s),
              "-content", str(document), "-CAfile", str(ca_pem), "-out", os.devnull]  # fmt: skip
    checked = subprocess.run(verify, capture_output=True, text=True)
    assert checked.returncode == 0 and "Verification successful" in checked.stderr, checked.stderr
    mine = mncctl(daemon.bus.address, "verify", str(document), "--ca", str(ca_pem))
    assert mine.returncode == 0, mine.stdout
    assert f"signed by:  {card.profile.name}" in mine.stdout
    document.write_text("報告書 / report, changed\n")
    assert subprocess.run(verify, capture_output=True).returncode != 0
    changed = mncctl(daemon.bus.address, "verify", str(document), "--signature", str(p7s))
    assert changed.returncode == 7 and "the signed bytes were changed" in changed.stdout


def _encrypted(source: Path, target: Path) -> Path:
    subprocess.run(
        ["qpdf", "--encrypt", "user", "owner", "256", "--", str(source), str(target)], check=True
    )
    return target


def _locked(source: Path, target: Path) -> Path:
    sign_with_software_key(source, target, certify_no_changes=True)
    return target


BAD_INPUTS = [
    ("not-a-pdf", "in.pdf is not a PDF file: sign other files with --cms.",
     "in.pdfはPDFファイルではありません。PDF以外のファイルには --cms で署名してください。"),
    ("empty", "in.pdf is empty (0 bytes): check that it was saved completely.",
     "in.pdfは空のファイルです（0バイト）。正しく保存されているか確認してください。"),
    ("directory", "in.pdf is a folder, not a file: give a file in it.",
     "in.pdfはフォルダーです。中のファイルを指定してください。"),
    ("missing", "in.pdf does not exist: check the file's name and folder.",
     "in.pdfが見つかりません。ファイル名と保存場所を確認してください。"),
    ("encrypted",
     "in.pdf is encrypted (password-protected): remove the protection, then sign it.",
     "in.pdfは暗号化（パスワード保護）されているため、署名できません。保護を解除してから"
     "署名してください。"),
    ("damaged",
     "in.pdf cannot be read well enough to sign it (Could not read malformed PDF file). If "
     "qpdf reads it, 'qpdf {dir}/in.pdf repaired.pdf' writes a repaired copy to sign; "
     "otherwise make the PDF again with the program that made it.",
     "in.pdfを署名できるほど正しく読み取れません（Could not read malformed PDF file）。qpdfで"
     "読み取れる場合は「qpdf {dir}/in.pdf repaired.pdf」で修復したコピーを作り、それに署名して"
     "ください。読み取れない場合は、PDFを作成したソフトで作り直してください。"),
    ("locked",
     "in.pdf is locked by its signature 'Author' (no changes allowed): another signature "
     "would invalidate it.",
     "in.pdfは署名「Author」によって変更が禁止されているため、署名できません。"),
    ("output-exists",
     "out.pdf exists: not overwritten. Give another name, or add --force to replace it.",
     "out.pdfは既にあるため、上書きしていません。別の名前を指定するか、置き換える場合は "
     "--force を付けてください。"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message", "japanese"), BAD_INPUTS, ids=[case for case, _, _ in BAD_INPUTS]
)
def test_bad_inputs_get_clear_errors_and_nothing_changes(
    daemon, card, tmp_path, case, message, japanese
):
    wait_state(daemon.bus.address, "card-present")
    plain = make_pdf(tmp_path / "plain.pdf")
    source = tmp_path / "in.pdf"
    output = tmp_path / "out.pdf"
    if case == "not-a-pdf":
        source.write_text("just text\n")
    elif case == "empty":
        source.write_bytes(b"")
    elif case == "directory":
        source.mkdir()
    elif case == "encrypted":
        _encrypted(plain, source)
    elif case == "damaged":
        source.write_bytes(plain.read_bytes()[:200])
    elif case == "locked":
        _locked(plain, source)
    elif case == "output-exists":
        source.write_bytes(plain.read_bytes())
        output.write_bytes(b"keep me")
    before = source.read_bytes() if source.is_file() else None
    message, japanese = (text.replace("{dir}", str(tmp_path)) for text in (message, japanese))
    card.commands(clear=True)
    result = sign_pdf(daemon, card, source, output)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"mncctl: {tmp_path}/") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one line
    assert not JAPANESE_TEXT.search(result.stderr), result.stderr
    in_japanese = sign_pdf(daemon, card, source, output, lang=JAPANESE)
    assert in_japanese.returncode == 1, in_japanese.stderr
    assert japanese in in_japanese.stderr and len(in_japanese.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr + in_japanese.stderr
    assert verifies_with_pin(card.commands()) == 0  # refused before any PIN
    if before is not None:
        assert source.read_bytes() == before
    if case == "output-exists":
        assert output.read_bytes() == b"keep me"
    else:
        assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_force_replaces_the_output_atomically(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "in.pdf")
    output = tmp_path / "out.pdf"
    output.write_bytes(b"old")
    assert sign_pdf(daemon, card, source, output, "--force").returncode == 0
    assert output.read_bytes().startswith(source.read_bytes())
    assert "Signature is Valid" in pdfsig(output)


def test_expired_certificate_is_refused_with_its_own_exit_code(daemon, insert_card, tmp_path):
    card = insert_card(not_after_days=-3)
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "in.pdf")
    output = tmp_path / "out.pdf"
    result = sign_pdf(daemon, card, source, output)
    assert result.returncode == 6, result.stderr
    assert result.stderr.startswith("mncctl: The signing certificate expired on 20")
    assert "are not accepted. Get a new one issued at your municipal office" in result.stderr
    assert not JAPANESE_TEXT.search(result.stderr), result.stderr
    assert signatures_sent(card.commands()) == 0 and not output.exists()
    # The daemon now knows the certificate: the next try is refused before the password.
    card.commands(clear=True)
    again = sign_pdf(daemon, card, source, output, lang=JAPANESE)
    assert again.returncode == 6, again.stderr
    assert again.stderr.startswith("mncctl: 署名用電子証明書の有効期限（20"), again.stderr
    assert "日）が切れています。この電子証明書で署名した文書は受け付けられません。" in again.stderr
    assert "市区町村の窓口で新しい電子証明書の発行を受けてください。" in again.stderr
    assert verifies_with_pin(card.commands()) == 0


def test_invalidated_certificate_is_refused_before_the_pin(daemon, insert_card, tmp_path):
    card = insert_card(refuse_key="sign")
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "in.pdf")
    output = tmp_path / "out.pdf"
    first = sign_pdf(daemon, card, source, output)  # the card refuses the key: now known
    assert first.returncode != 0 and not output.exists()
    card.commands(clear=True)
    again = sign_pdf(daemon, card, source, output)
    assert again.returncode == 6, again.stderr
    assert again.stderr.startswith("mncctl: The signing certificate has been invalidated")
    assert not JAPANESE_TEXT.search(again.stderr), again.stderr
    in_japanese = sign_pdf(daemon, card, source, output, lang=JAPANESE)
    assert in_japanese.returncode == 6, in_japanese.stderr
    assert in_japanese.stderr.startswith("mncctl: 署名用電子証明書は失効しています。")
    assert verifies_with_pin(card.commands()) == 0


def test_renewal_window_gives_a_warning(daemon, insert_card, tmp_path):
    card = insert_card(not_after_days=20)
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "in.pdf")
    result = sign_pdf(daemon, card, source, tmp_path / "out.pdf")
    assert result.returncode == 0, result.stderr
    assert "mncctl: warning: the signing certificate expires on 20" in result.stderr
    assert ": renew it at your municipal office (bring your My Number Card)" in result.stderr
    assert not JAPANESE_TEXT.search(result.stderr), result.stderr


def test_desktop_session_uses_the_daemons_dialog(tmp_path, sandbox, card):
    pinentry = ScriptedPinentry(tmp_path / "pinentry", [card.profile.sign_password])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    (tmp_path / "bus").mkdir()
    with daemon_on_private_bus(tmp_path / "bus", env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        source = make_pdf(tmp_path / "in.pdf")
        output = tmp_path / "out.pdf"
        card.commands(clear=True)
        result = mncctl(
            daemon.bus.address, "sign", "--pdf", str(source), "-o", str(output), display=":0"
        )
    assert result.returncode == 0, result.stderr
    assert "Waiting for you to enter the signing password in the PIN dialog" in result.stderr
    assert pinentry.started() == 1
    assert any("sign a document" in text for text in pinentry.descriptions())
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 1
    assert "Signature is Valid" in pdfsig(output)


def test_certificate_is_written_only_when_asked_and_privately(daemon, card, tmp_path):
    wait_state(daemon.bus.address, "card-present")
    document = tmp_path / "data.bin"
    document.write_bytes(b"\x00\x01raw")
    crt = tmp_path / "me.crt"
    result = mncctl(
        daemon.bus.address, "sign", str(document), "--certificate", str(crt), "--pin-stdin",
        stdin=card.profile.sign_password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "raw PKCS#1 v1.5 signature" in result.stdout
    assert "name, address, birth date and sex" in result.stdout
    assert crt.read_bytes() == card.certificates()["sign"]
    assert stat.S_IMODE(crt.stat().st_mode) == 0o600
    assert not Path(f"{document}.crt").exists()
    again = mncctl(
        daemon.bus.address, "sign", str(document), "--pin-stdin",
        stdin=card.profile.sign_password + "\n",
    )  # fmt: skip
    assert again.returncode == 1 and "exists: not overwritten" in again.stderr


def test_the_daemon_never_imports_pyhanko():
    code = "import sys, mncd.daemon.main; print('pyhanko' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def readme_documents_example() -> str:
    doc = Path(__file__).resolve().parent.parent / "docs" / "signed-documents.md"
    text = doc.read_text(encoding="utf-8")
    start = text.index("From Python, `mncd.documents`")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


def test_readme_documents_example_signs_with_the_daemons_dialog(tmp_path, sandbox, card):
    pinentry = ScriptedPinentry(tmp_path / "pinentry", [card.profile.sign_password])
    env = {**sandbox.env, **config_with(tmp_path, pinentry), "LANG": "C.UTF-8", "DISPLAY": ":0"}
    (tmp_path / "bus").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    make_pdf(work / "application.pdf")
    (work / "example.py").write_text(readme_documents_example())
    english = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES")}
    english.update(LANG="C.UTF-8", LANGUAGE="")
    with daemon_on_private_bus(tmp_path / "bus", env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        result = subprocess.run(
            [sys.executable, "example.py"], cwd=work, capture_output=True, text=True,
            timeout=120, env={**english, "DBUS_SESSION_BUS_ADDRESS": daemon.bus.address},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("adbe.pkcs7.detached 20") and "+09:00" in lines[0]
    # The virtual card's test CA is not J-LIS's: intact, but not anchored.
    assert lines[1] == "Signature1 untrusted the whole file not anchored"
    assert "Signature is Valid" in pdfsig(work / "application-signed.pdf")


def test_digest_from_with_a_caller_that_gives_no_digest_signs_nothing(daemon, card):
    """gdbus serves no DigestSource1: after the password the daemon asks it, gets an error,
    and answers Cancelled with no signature sent to the card."""
    from busstack import CallError, gdbus_call

    wait_state(daemon.bus.address, "card-present")
    source = "'digest-from': <objectpath '/io/github/mncd/client/digest/1'>"
    pin = f"'pin': <'{card.profile.sign_password}'>"
    with pytest.raises(CallError) as refused:
        gdbus_call(daemon.bus.address, "Sign", "[byte 0x01]", "sha256", f"{{{source}, {pin}}}")
    assert refused.value.name.endswith("Error.InvalidArgument")
    assert "data must be empty with digest-from" in refused.value.message
    card.commands(clear=True)
    with pytest.raises(CallError) as cancelled:
        gdbus_call(daemon.bus.address, "Sign", "@ay []", "sha256", f"{{{source}, {pin}}}")
    assert cancelled.value.name.endswith("Error.Cancelled"), cancelled.value.message
    assert "nothing was signed" in cancelled.value.message
    commands = card.commands()
    assert verifies_with_pin(commands) == 1 and signatures_sent(commands) == 0
    assert card.tries()["sign"] == card.profile.sign_tries_left
