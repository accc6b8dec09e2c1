"""Errors of signing and verifying documents (each with a text for people)."""

from __future__ import annotations


class DocumentError(Exception):
    """A document that cannot be signed or read as asked; nothing was written."""


class NotSignable(DocumentError):
    """The input is not a PDF that can be signed (encrypted, damaged, locked, …)."""


class OutputExists(DocumentError):
    """The output file exists and overwriting it was not asked for."""


class CertificateUnusable(DocumentError):
    """The signing certificate is expired or invalidated: no document is signed with it."""

    def __init__(self, state: str, text: str) -> None:
        super().__init__(text)
        self.state = state  #: expired, invalidated or not-yet-valid
