"""Errors of the daemon's own rules (the API's errors are in :mod:`mncd.errors`)."""

from __future__ import annotations


class LastTryError(Exception):
    """One try is left and the caller did not say it may be used."""

    def __init__(self, label: str) -> None:
        super().__init__(f"one try left for the {label}")
        self.label = label


class PinChangeUnconfirmedError(Exception):
    """CHANGE REFERENCE DATA went to the card, but its answer never came back (the card was
    pulled, the reader failed): the card did not confirm the new PIN."""


class DigestUnavailableError(Exception):
    """The caller did not give the digest to sign (``digest-from``); nothing was signed."""

    #: The signing certificate read before the caller was asked (the password was right).
    certificate: bytes | None = None
