"""PIN policies of the My Number Card, checked before anything reaches the card.

A PIN of the wrong shape would still cost a try on the card, so it is refused here with a
:class:`~mncd.card.errors.PinFormatError` whose text explains the rule and never repeats the PIN.
"""

from __future__ import annotations

import string
from typing import NamedTuple

from .errors import PinFormatError


class PinPolicy(NamedTuple):
    """Shape and try count of one PIN on the card (a NamedTuple, like the card layer's other
    constant records: quick to define when the daemon starts)."""

    name: str
    label_en: str
    label_ja: str
    min_length: int
    max_length: int
    alphabet: str
    max_tries: int
    needs_letter_and_digit: bool = False

    @property
    def rule_en(self) -> str:
        """The rule in English, for prompts and errors."""
        if self.alphabet == string.digits:
            return f"{self.min_length} digits"
        return (
            f"{self.min_length}–{self.max_length} characters of A–Z and 0–9, "
            "with at least one letter and one digit"
        )

    @property
    def rule_ja(self) -> str:
        """The rule in Japanese, for prompts and errors."""
        if self.alphabet == string.digits:
            return f"数字{self.min_length}桁"
        return f"英大文字と数字を両方含む{self.min_length}〜{self.max_length}文字"

    def check(self, pin: str | bytes | bytearray) -> bytearray:
        """Return the PIN as ASCII bytes ready for VERIFY, or raise :class:`PinFormatError`."""
        if isinstance(pin, (bytes, bytearray)):
            try:
                text = bytes(pin).decode("ascii")
            except UnicodeDecodeError:
                raise self._error() from None
        elif isinstance(pin, str):
            text = pin
        else:
            raise PinFormatError(f"{self.label_en} must be text")
        if not self.min_length <= len(text) <= self.max_length:
            raise self._error()
        if any(ch not in self.alphabet for ch in text):
            raise self._error()
        if self.needs_letter_and_digit and (
            not any(ch in string.ascii_uppercase for ch in text)
            or not any(ch in string.digits for ch in text)
        ):
            raise self._error()
        return bytearray(text.encode("ascii"))

    def _error(self) -> PinFormatError:
        return PinFormatError(
            f"{self.label_en} must be {self.rule_en} ({self.label_ja}は{self.rule_ja}です)"
        )


AUTH_PIN = PinPolicy(
    name="auth",
    label_en="user-authentication PIN",
    label_ja="利用者証明用電子証明書の暗証番号",
    min_length=4,
    max_length=4,
    alphabet=string.digits,
    max_tries=3,
)

SIGN_PASSWORD = PinPolicy(
    name="sign",
    label_en="signing password",
    label_ja="署名用電子証明書のパスワード",
    min_length=6,
    max_length=16,
    alphabet=string.ascii_uppercase + string.digits,
    max_tries=5,
    needs_letter_and_digit=True,
)

CARD_INFO_PIN = PinPolicy(
    name="card-info",
    label_en="card-info PIN",
    label_ja="券面事項入力補助用暗証番号",
    min_length=4,
    max_length=4,
    alphabet=string.digits,
    max_tries=3,
)


def wipe(buffer: bytearray) -> None:
    """Overwrite a PIN buffer in place once it is no longer needed."""
    for i in range(len(buffer)):
        buffer[i] = 0
