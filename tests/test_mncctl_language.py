"""mncctl in the user's language, on a terminal as a person sees it: ``status`` and PIN errors
under a Japanese and an English locale (tmux, the real daemon, the virtual card)."""

from __future__ import annotations

import pytest
from busstack import daemon_on_private_bus
from faultkit import verifies_with_pin
from test_daemon_dbus import wait_state
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

    def open_terminal(address: str, lang: str, *args: str):
        opened.append(run_in_terminal(address, *args, lang=lang))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def flat(screen: str) -> str:
    """The screen without line ends (a long line wraps at the pane's width)."""
    return screen.replace("\n", "")


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
    for text in STATUS[lang]:
        assert text in flat(screen), (text, screen)
    english_only = ("State:", "Signing certificate", "days left")
    japanese_only = ("状態", "署名用電子証明書", "あと")
    for text in english_only if lang == JAPANESE else japanese_only:
        assert text not in screen, (text, screen)
    assert "Token:" not in screen and "トークン" not in screen  # an ordinary card


PIN_ERRORS = {
    JAPANESE: {
        "prompt": "利用者証明用電子証明書の暗証番号(数字4桁):",
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
