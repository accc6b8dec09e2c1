"""Signed documents with the My Number Card: PDFs the Legal Affairs Bureau accepts, PAdES B-B,
detached CMS, and verification anchored at J-LIS's CAs.

Client side only: pyHanko builds the documents, the daemon (through :mod:`mncd.client`) signs
one digest per document after the user's signing password. The daemon never imports this.
pyHanko is imported on first use of a name below (``mncd.documents.files`` alone needs none).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names and the module each lives in.
_EXPORTS = {
    "sign_pdf": "pdf",
    "PdfSignature": "pdf",
    "sign_cms": "cms",
    "CmsSignature": "cms",
    "PinOptions": "signer",
    "verify_pdf": "verify",
    "verify_cms": "verify",
    "VerifyOptions": "verify",
    "load_crl": "verify",
    "Verification": "verdict",
    "SignatureCheck": "verdict",
    "TrustAnchor": "verify",
    "Verdict": "verdict",
    "report_lines": "report",
    "REVOCATION_NOTE": "verify",
    "revocation_note": "verify",
    "DocumentError": "errors",
    "NotSignable": "errors",
    "OutputExists": "errors",
    "CertificateUnusable": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mncd.documents' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mncd.documents.{module}"), name)
