"""How exceptions from the layers below reach D-Bus callers: one table, short texts in English
with Japanese, never a traceback, a path or a PIN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dbus_next import DBusError

from mncd import errors
from mncd.card import errors as card_errors
from mncd.card.pin import PinPolicy
from mncd.core.errors import (
    DigestUnavailableError,
    LastTryError,
    PromptCancelledError,
    PromptUnavailableError,
)
from mncd.core.pingate import CardChangedError
from mncd.jpki.errors import CertificateError, SignatureMismatch

Text = str | Callable[[Any], str]

#: How exceptions from the layers below reach callers: the first entry whose types match gives
#: the API error and its text (a string, or a function of the exception). Subclasses first.
ERROR_TABLE: tuple[tuple[tuple[type[BaseException], ...], type[errors.MncdError], Text], ...] = (
    ((card_errors.PinFormatError,), errors.PinFormat, str),
    (
        (card_errors.PinIncorrectError,),
        errors.PinIncorrect,
        lambda exc: f"{exc} (暗証番号が違います。残り{exc.tries_left}回)",
    ),
    (
        (card_errors.PinBlockedError,),
        errors.PinBlocked,
        lambda exc: (
            f"{exc}; reset it at your municipal office "
            "(暗証番号がロックされました。市区町村の窓口で再設定してください)"
        ),
    ),
    ((PromptCancelledError,), errors.Cancelled, "the user cancelled (操作はキャンセルされました)"),
    (
        (DigestUnavailableError,),
        errors.Cancelled,
        lambda exc: f"{exc}; nothing was signed (署名していません)",
    ),
    (
        (PromptUnavailableError,),
        errors.PinRequired,
        lambda exc: f"no PIN dialog could be shown ({exc}); pass the PIN in the pin option",
    ),
    (
        (LastTryError,),
        errors.PinRequired,
        lambda exc: (
            f"only one try is left for the {exc.label}: a wrong PIN would block it "
            "until it is reset at the municipal office; set allow-last-try to send it anyway "
            "(残り1回です。間違えるとロックされます)"
        ),
    ),
    ((card_errors.SecurityStatusError,), errors.PinRequired, "the card needs the PIN for this"),
    (
        (card_errors.CardInUseError,),
        errors.Busy,
        "another program is using the card; try again when it has finished",
    ),
    (
        (card_errors.PinChangeUnsupportedError,),
        errors.NotSupported,
        "this card does not take the PIN change command mncd sends",
    ),
    (
        (card_errors.PinChangeRefusedError,),
        errors.Failed,
        lambda exc: f"{exc} (カードが暗証番号の変更を拒否しました)",
    ),
    (
        (card_errors.CardTimeoutError,),
        errors.Failed,
        "the card did not answer in time; take it out and insert it again",
    ),
    (
        (CardChangedError,),
        errors.CardRemoved,
        "the card was changed since the PIN was asked for; nothing was sent to it",
    ),
    (
        (card_errors.CardRemovedError, card_errors.CardResetError),
        errors.CardRemoved,
        "the card was removed or reset during the operation",
    ),
    (
        (card_errors.NoCardError, card_errors.NoReaderError),
        errors.NoCard,
        "no My Number Card is inserted (マイナンバーカードがありません)",
    ),
    (
        (card_errors.PcscUnavailableError,),
        errors.PcscUnavailable,
        "the PC/SC service (pcscd) is not available",
    ),
    (
        (card_errors.KeyUnusableError,),
        errors.CertificateInvalid,
        "the card refuses to use this key: its certificate can no longer be used",
    ),
    (
        (SignatureMismatch, CertificateError),
        errors.CertificateInvalid,
        "the card's answer does not verify against its certificate; nothing was returned",
    ),
    ((card_errors.NotJpkiCardError,), errors.NotSupported, "this card is not a My Number Card"),
    ((card_errors.CardError,), errors.Failed, "the card did not complete the operation"),
)


def pin_unchanged_text(policy: PinPolicy) -> str:
    """What a failed ChangePin adds when the card certainly kept the current PIN."""
    return (
        f"your {policy.label_en} was not changed: the current one is still valid "
        f"({policy.label_ja}は変更されていません。現在のものが引き続き有効です)"
    )


def pin_unconfirmed_text(policy: PinPolicy) -> str:
    """What a failed ChangePin adds when the card got the change but never answered it."""
    return (
        f"the card did not confirm the change: your current {policy.label_en} should still be "
        "valid; use the new one only if the card refuses the current one "
        f"(カードが変更を確認できませんでした。現在の{policy.label_ja}が有効なはずです。"
        "拒否された場合のみ新しいものを使ってください)"
    )


def to_api_error(exc: BaseException) -> errors.MncdError:
    """The API error a caller gets for an exception from the layers below."""
    if isinstance(exc, errors.MncdError):
        return exc
    for types, api_error, text in ERROR_TABLE:
        if isinstance(exc, types):
            return api_error(text if isinstance(text, str) else text(exc))
    return errors.Failed("internal error in mncd; see its log")


def to_dbus_error(exc: errors.MncdError) -> DBusError:
    return DBusError(exc.dbus_name(), exc.text)
