"""Errors of the daemon's own rules and of asking the user (the API's errors are in
:mod:`mncd.errors`): importable without the dialogs themselves."""

from __future__ import annotations


class LastTryError(Exception):
    """One try is left and the caller did not say it may be used."""

    def __init__(self, label: str) -> None:
        super().__init__(f"one try left for the {label}")
        self.label = label


class OperationAbandonedError(Exception):
    """The caller of a card operation stopped waiting (a timeout, a cancellation) before its PIN
    was sent: the operation ends on the card thread without sending it."""


class PinChangeUnconfirmedError(Exception):
    """CHANGE REFERENCE DATA went to the card, but its answer never came back (the card was
    pulled, the reader failed): the card did not confirm the new PIN."""


class DigestUnavailableError(Exception):
    """The caller did not give the digest to sign (``digest-from``); nothing was signed."""

    #: The signing certificate read before the caller was asked (the password was right).
    certificate: bytes | None = None


class PromptCancelledError(Exception):
    """The user cancelled the PIN dialog or declined the last try."""


class PromptUnavailableError(Exception):
    """No PIN dialog could be shown (pinentry missing or failing)."""
