"""Typed errors of the card layer.

Every failure a caller can act on has its own class. Messages never contain a PIN, personal data
or raw card responses beyond a status word.
"""

from __future__ import annotations


class CardError(Exception):
    """Base class of every card-layer error."""


class TransportError(CardError):
    """The reader or the PC/SC service failed to carry an APDU."""


class PcscUnavailableError(TransportError):
    """The PC/SC service (pcscd) is not running or went away."""


class NoReaderError(TransportError):
    """The named reader does not exist (any more)."""


class NoCardError(TransportError):
    """No card is in the reader."""


class CardRemovedError(TransportError):
    """The card left the reader while it was being used."""


class CardTimeoutError(TransportError):
    """The card (or its reader) did not answer in time; the operation was given up."""


class CardInUseError(TransportError):
    """Another program holds the card exclusively for now."""


class CardResetError(TransportError):
    """The card was reset by someone else; its verification state is gone."""


class ApduError(CardError):
    """The card answered a command with an unexpected status word."""

    def __init__(self, sw: int, message: str | None = None) -> None:
        self.sw = sw
        super().__init__(message or f"card answered status {sw:04X}")


class KeyUnusableError(ApduError):
    """The card refuses to use the key: its certificate can no longer be used."""

    #: The key's certificate, when the operation had read it from the card.
    certificate: bytes | None = None


class PinChangeRefusedError(ApduError):
    """The card answered CHANGE REFERENCE DATA with an error: the PIN was not changed."""


class PinChangeUnsupportedError(PinChangeRefusedError):
    """The card does not take CHANGE REFERENCE DATA in the form mncd sends (peers' form)."""


class InvalidResponseError(CardError):
    """The card's answer is malformed (wrong length, broken encoding, impossible values)."""


class NotJpkiCardError(CardError):
    """The card has no JPKI application: it is not a My Number Card."""


class FileMissingError(ApduError):
    """The file (certificate, key, PIN) does not exist on this card."""


class SecurityStatusError(ApduError):
    """The operation needs a PIN that has not been verified in this card session."""


class PinError(CardError):
    """Base class of PIN failures."""


class PinFormatError(PinError, ValueError):
    """The PIN does not have the shape the card requires; it was not sent to the card."""


class PinIncorrectError(PinError):
    """The card rejected the PIN; ``tries_left`` tries remain."""

    def __init__(self, tries_left: int, label: str = "PIN") -> None:
        self.tries_left = tries_left
        super().__init__(f"incorrect {label}: {tries_left} tries left")


class PinBlockedError(PinError):
    """No tries are left: the PIN is blocked until it is reset at the municipal office."""

    def __init__(self, label: str = "PIN") -> None:
        self.tries_left = 0
        super().__init__(f"{label} is blocked: no tries left")
