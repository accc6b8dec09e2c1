"""mncctl in the user's language, on a terminal as a person sees it: ``status``, PIN errors,
``verify`` reports of intact and tampered PDFs and file errors of ``sign`` under a Japanese and
an English locale (tmux, the real daemon, the virtual card)."""

from __future__ import annotations

import re

import pytest
from busstack import daemon_on_private_bus
from faultkit import verifies_with_pin
from pdfkit import make_pdf
from test_daemon_dbus import wait_state
from test_documents import ca_file, sign_pdf
from test_mncctl_pin import run_in_terminal

JAPANESE = "ja_JP.UTF-8"
ENGLISH = "C.UTF-8"


@pytest.fixture
def daemon(tmp_path, sandbox):
    with daemon_on_private_bus(tmp_path, {**sandbox.env, "LANG": ENGLISH}) as process:
        yield process
    assert "Traceback" not in process.log


@pytest.fixture
def terminals():
    """Factory of mncctl terminals in a locale, all closed afterwards."""
    opened = []

    def open_terminal(address: str, lang: str, *args: str, **extra: str):
        opened.append(run_in_terminal(address, *args, lang=lang, **extra))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def flat(screen: str) -> str:
    """The screen without line ends (a long line wraps at the pane's width)."""
    return screen.replace("\n", "")


def unspaced(text: str) -> str:
    """``text`` without any white space: where a long line wraps depends on the length of the
    paths in it (the clone's, the temporary directory's), and tmux drops a space at a wrap."""
    return "".join(text.split())


STATUS = {
    JAPANESE: [
        "状態:", "マイナンバーカードがあります", "利用者証明用電子証明書", "署名用電子証明書",
        "暗証番号の残り回数:", "パスワードの残り回数:", "3/3", "5/5",
        "署名用電子証明書はパスワードを入力したときにだけカードから読み取れます。",
    ],
    ENGLISH: [
        "State:            My Number Card present", "User-authentication certificate",
        "Signing certificate", "  PIN tries:      3/3", "  Password tries: 5/5",
        "The card gives it only after the signing password: it becomes known the first time "
        "you sign, or with 'mncctl cert show sign'.",
    ],
}  # fmt: skip


@pytest.mark.parametrize("lang", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_status_in_the_users_language(daemon, card, terminals, lang):
    wait_state(daemon.bus.address, "card-present")
    screen = terminals(daemon.bus.address, lang, "status").wait("[exit ")
    assert "[exit 0]" in screen, screen
    for text in STATUS[lang]:  # (a long line wraps to the terminal, under its value)
        assert unspaced(text) in unspaced(screen), (text, screen)
    english_only = ("State:", "Signing certificate", "days left")
    japanese_only = ("状態", "署名用電子証明書", "あと")
    for text in english_only if lang == JAPANESE else japanese_only:
        assert text not in screen, (text, screen)
    assert "Token:" not in screen and "トークン" not in screen  # an ordinary card
    for detail in ("\nCard:", "\nカード:", "Fingerprint", "フィンガープリント", "Issuer", "発行者"):
        assert detail not in screen, (detail, screen)  # for people: no ids, DNs, fingerprints
    assert not re.search(r"[0-9a-f]{32}", screen), screen


@pytest.mark.parametrize("lang", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_status_wraps_to_a_narrow_terminal_with_a_hanging_indent(daemon, card, terminals, lang):
    """A terminal 50 columns wide: no line is longer, and a long value goes on under itself."""
    from mncd.cli.text import display_width

    wait_state(daemon.bus.address, "card-present")
    term = terminals(daemon.bus.address, lang, "status", "--details", COLUMNS="50")
    screen = term.wait("[exit ")
    assert "[exit 0]" in screen, screen
    lines = screen[: screen.index("[exit ")].rstrip("\n").splitlines()
    assert all(display_width(line) <= 50 for line in lines), screen
    step = next(i for i, line in enumerate(lines) if re.search("Next step:|次にすること:", line))
    head, value = lines[step].split(":", 1)
    column = display_width(head) + 1 + len(value) - len(value.lstrip())  # where the value starts
    continuation = lines[step + 1]
    assert continuation[:column].strip() == "" and continuation[column] != " ", screen
    assert re.search(r"\n(カード|Card): +[0-9a-f]{16}", screen), screen  # --details: its id


PIN_ERRORS = {
    JAPANESE: {
        "prompt": "利用者証明用電子証明書の暗証番号（数字4桁）:",
        "full-width": "mncctl: 全角で入力されています。半角で入力してください。"
        "残り回数は減っていません。",
        "wrong": "mncctl: 利用者証明用電子証明書の暗証番号が違います。残り2回です。",
    },
    ENGLISH: {
        "prompt": "User-authentication PIN (4 digits):",
        "full-width": "mncctl: It was typed in full-width characters: type it in half-width "
        "characters. No try was used.",
        "wrong": "mncctl: Wrong user-authentication PIN: 2 tries left.",
    },
}


@pytest.mark.parametrize("lang", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_pin_entry_hints_asks_again_and_tells_a_wrong_pin(daemon, card, terminals, lang):
    texts = PIN_ERRORS[lang]
    wait_state(daemon.bus.address, "card-present")
    card.commands(clear=True)
    term = terminals(daemon.bus.address, lang, "auth")
    term.wait(texts["prompt"])
    term.type("１２３４", "Enter")  # full-width digits, as an input method may type them
    screen = term.wait(texts["full-width"])
    assert flat(screen).count(texts["prompt"]) == 2, screen  # asked again: no try was spent
    term.type("9999", "Enter")
    screen = term.wait("[exit ")
    assert "[exit 4]" in screen, screen
    lines = [line for line in screen.splitlines() if line.startswith("mncctl: ")]
    assert lines == [texts["full-width"], texts["wrong"]], screen  # one line each
    assert "１２３４" not in screen and "9999" not in screen  # never echoed
    assert verifies_with_pin(card.commands()) == 1  # only the half-width entry reached the card
    assert card.tries()["auth"] == 2


#: Kana and kanji: none may show in English, and each Japanese line has them.
JAPANESE_TEXT = re.compile("[\u3040-\u30ff\u4e00-\u9fff]")

VERIFY = {
    JAPANESE: {
        "intact": [
            ": PDF、署名1件", "署名1（Signature1）: 有効", "  申告日時:   ",
            " JST（署名者のコンピューターの時刻）", "  対象:       ファイル全体",
            "  改ざんなし: はい", "  信頼:       はい（--ca で指定した認証局（",
            "  時点の有効性: はい: 電子証明書は有効、現在（",
            "失効の確認はしていません。失効情報はJ-LISから署名検証者として登録された事業者"
            "にのみ提供されるため、失効した電子証明書をオフラインで見分けることはできません"
            "（失効リストがあれば --crl で指定してください）。",
            "結果: 有効",
        ],
        "tampered": [
            "署名1（Signature1）: 無効",
            "  問題: 署名された内容が改ざんされています（ダイジェストが一致しません）",
            "結果: 無効",
        ],
    },
    ENGLISH: {
        "intact": [
            ": PDF, 1 signature", "signature 1 (Signature1): valid", "  claimed:    ",
            " JST (as the signer's computer says)",  # Japan's time
            "  covers:     the whole file", "  intact:     yes",
            "  trusted:    yes (the CA given with --ca (",
            "  in time:    yes: certificate valid, judged now (",
            "Revocation was not checked: J-LIS gives revocation data only to registered "
            "verifiers, so an invalidated certificate cannot be recognised offline (give a CRL "
            "with --crl).",
            "result: valid",
        ],
        "tampered": [
            "signature 1 (Signature1): INVALID",
            "  problem: the signed bytes were changed: the digest does not match",
            "result: INVALID",
        ],
    },
}  # fmt: skip


#: mncctl's and mncd.documents' English words that a Japanese screen never shows.
ENGLISH_WORDS = (
    "signature 1", "signed by", "claimed", "covers", "trusted", "in time", "intact", "problem",
    "result", "Revocation",
    "whole file", "does not exist", "exists", "overwritten", "valid", "INVALID", "note:",
)  # fmt: skip


def in_one_language(screen: str, lang: str, ignore: str = "") -> None:
    """Japanese texts on a Japanese screen, none on an English one (``ignore``: the signer's
    name, which is the card's)."""
    text = screen.replace(ignore, "") if ignore else screen
    if lang == ENGLISH:
        assert not JAPANESE_TEXT.search(text), screen
    else:
        for english in ENGLISH_WORDS:  # the certificate's issuer (data) may be English
            assert english not in text, (english, screen)


@pytest.mark.parametrize("lang", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_verify_reports_in_the_users_language(daemon, card, terminals, tmp_path, lang):
    wait_state(daemon.bus.address, "card-present")
    source = make_pdf(tmp_path / "form.pdf", text="Pay 1000 yen")
    signed = tmp_path / "signed.pdf"
    assert sign_pdf(daemon, card, source, signed).returncode == 0
    ca = ca_file(card, tmp_path)
    screen = terminals(daemon.bus.address, lang, "verify", str(signed), "--ca", str(ca)).wait(
        "[exit "
    )
    assert "[exit 0]" in screen, screen
    for text in VERIFY[lang]["intact"]:
        assert text in flat(screen), (text, screen)
    assert card.profile.name in screen
    in_one_language(screen, lang, ignore=card.profile.name)

    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(signed.read_bytes().replace(b"Pay 1000 yen", b"Pay 9000 yen"))
    screen = terminals(daemon.bus.address, lang, "verify", str(tampered), "--ca", str(ca)).wait(
        "[exit "
    )
    assert "[exit 7]" in screen, screen
    for text in VERIFY[lang]["tampered"]:
        assert text in flat(screen), (text, screen)
    in_one_language(screen, lang, ignore=card.profile.name)


FILE_ERRORS = {
    JAPANESE: {
        "missing": "mncctl: {path}が見つかりません。ファイル名と保存場所を確認してください。",
        "exists": "mncctl: {path}は既にあるため、上書きしていません。別の名前を指定するか、"
        "置き換える場合は --force を付けてください。",
    },
    ENGLISH: {
        "missing": "mncctl: {path} does not exist: check the file's name and folder.",
        "exists": "mncctl: {path} exists: not overwritten. Give another name, or add --force "
        "to replace it.",
    },
}


@pytest.mark.parametrize("lang", [JAPANESE, ENGLISH], ids=["ja", "en"])
def test_sign_file_errors_in_the_users_language(daemon, card, terminals, tmp_path, lang):
    wait_state(daemon.bus.address, "card-present")
    missing, output = tmp_path / "missing.pdf", tmp_path / "out.pdf"
    card.commands(clear=True)
    screen = terminals(
        daemon.bus.address, lang, "sign", "--pdf", str(missing), "-o", str(output)
    ).wait("[exit ")
    assert "[exit 1]" in screen, screen
    shown = flat(screen).split("[exit ")[0]
    expected = FILE_ERRORS[lang]["missing"].format(path=missing)
    assert unspaced(shown) == unspaced(expected), screen  # one error, nothing else
    in_one_language(screen, lang)

    source = make_pdf(tmp_path / "form.pdf")
    output.write_bytes(b"keep me")
    screen = terminals(
        daemon.bus.address, lang, "sign", "--pdf", str(source), "-o", str(output)
    ).wait("[exit ")
    assert "[exit 1]" in screen, screen
    assert unspaced(FILE_ERRORS[lang]["exists"].format(path=output)) in unspaced(screen), screen
    in_one_language(screen, lang)
    assert output.read_bytes() == b"keep me"
    assert verifies_with_pin(card.commands()) == 0  # refused before any PIN
