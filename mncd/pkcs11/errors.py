"""How exceptions from the layers below reach PKCS#11 applications: one CKR each."""

from __future__ import annotations

import asyncio
import logging

from mncd import errors
from mncd.card import errors as card_errors
from mncd.core.errors import LastTryError, PromptCancelledError, PromptUnavailableError
from mncd.core.pingate import CardChangedError
from mncd.jpki import certificates
from mncd.jpki.signatures import SignatureMismatch
from mncd.pkcs11.constants import CKR

log = logging.getLogger(__name__)


class Pkcs11Error(Exception):
    """A call ends with ``rv``."""

    def __init__(self, rv: CKR, text: str = "") -> None:
        super().__init__(text or rv.name)
        self.rv = rv


#: The first entry whose types match gives the CKR. Subclasses first.
ERROR_TABLE: tuple[tuple[tuple[type[BaseException], ...], CKR], ...] = (
    ((card_errors.PinFormatError, errors.PinFormat), CKR.PIN_INVALID),
    ((card_errors.PinIncorrectError, errors.PinIncorrect), CKR.PIN_INCORRECT),
    ((card_errors.PinBlockedError, errors.PinBlocked), CKR.PIN_LOCKED),
    ((PromptCancelledError, errors.Cancelled, asyncio.CancelledError), CKR.FUNCTION_CANCELED),
    # One try left and no way to ask the user whether to use it: nothing was sent.
    ((LastTryError,), CKR.FUNCTION_CANCELED),
    ((PromptUnavailableError, errors.PinRequired, errors.Busy), CKR.FUNCTION_FAILED),
    ((card_errors.SecurityStatusError,), CKR.USER_NOT_LOGGED_IN),
    (
        (
            CardChangedError,
            card_errors.CardRemovedError,
            card_errors.CardResetError,
            errors.CardRemoved,
        ),
        CKR.DEVICE_REMOVED,
    ),
    (
        (card_errors.NoCardError, card_errors.NoReaderError, errors.NoCard),
        CKR.TOKEN_NOT_PRESENT,
    ),
    (
        (card_errors.PcscUnavailableError, card_errors.CardTimeoutError, errors.PcscUnavailable),
        CKR.DEVICE_ERROR,
    ),
    ((card_errors.KeyUnusableError, errors.CertificateInvalid), CKR.KEY_FUNCTION_NOT_PERMITTED),
    ((SignatureMismatch, certificates.CertificateError), CKR.DEVICE_ERROR),
    ((card_errors.NotJpkiCardError, errors.NotSupported), CKR.TOKEN_NOT_RECOGNIZED),
    ((errors.CertificateMissing,), CKR.KEY_HANDLE_INVALID),
    ((card_errors.CardError,), CKR.DEVICE_ERROR),
    ((errors.MncdError,), CKR.FUNCTION_FAILED),
)


def to_ckr(exc: BaseException, call: str) -> CKR:
    """The CKR an application gets for ``exc``; unexpected ones are logged with a traceback."""
    if isinstance(exc, Pkcs11Error):
        return exc.rv
    for types, rv in ERROR_TABLE:
        if isinstance(exc, types):
            if rv in (CKR.DEVICE_ERROR, CKR.FUNCTION_FAILED, CKR.KEY_FUNCTION_NOT_PERMITTED):
                log.warning("%s failed: %s", call, exc)
            return rv
    log.error("%s failed", call, exc_info=exc)
    return CKR.GENERAL_ERROR
