"""Errors of the JPKI layer, importable without an X.509 parser."""

from __future__ import annotations


class CertificateError(ValueError):
    """Bytes that are not a usable certificate."""


class SignatureMismatch(Exception):
    """The card's answer is not a valid signature by the certificate's key."""
