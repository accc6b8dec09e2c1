"""Files mncctl reads and writes, and checking the card's signatures locally."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mncd.api import MAX_DATA
from mncd.cli.errors import UsageError, VerificationError
from mncd.cli.text import _

#: Files larger than the daemon accepts are hashed here and only the digest is sent.
MAX_SIGN_DATA = MAX_DATA


@dataclass(frozen=True)
class Payload:
    """What Sign is given for a file: the data itself, or its digest."""

    data: bytes
    is_digest: bool


def read_payload(path: Path, hash_name: str) -> Payload:
    """The file's bytes, or its digest when it is larger than :data:`MAX_SIGN_DATA`."""
    try:
        with path.open("rb") as stream:
            head = stream.read(MAX_SIGN_DATA + 1)
            if len(head) <= MAX_SIGN_DATA:
                return Payload(head, False)
            hasher = hashlib.new(hash_name, head)
            while chunk := stream.read(1024 * 1024):
                hasher.update(chunk)
            return Payload(hasher.digest(), True)
    except OSError as exc:
        raise UsageError(
            _("cannot read {path}: {reason}").format(path=path, reason=exc.strerror or exc)
        ) from exc


def check_output(path: Path) -> None:
    """Refuse early an output path that cannot be written (before a PIN is typed)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(_("{path} is a directory").format(path=path))
    if not parent.is_dir():
        raise UsageError(
            _("cannot write {path}: no such directory {parent}").format(path=path, parent=parent)
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(_("cannot write {path}: permission denied").format(path=path))


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` in ``path``, replaced atomically: a configuration file programs read (0644), or
    with ``mode=0o600`` one of mncctl's own notes."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise OSError(
            _("cannot write {path}: {reason}").format(path=path, reason=exc.strerror or exc)
        ) from exc


def verify_signature(
    certificate: bytes, signature: bytes, data: bytes, hash_name: str, *, prehashed: bool = False
) -> bool:
    """Whether ``signature`` over ``data`` (or over a digest when ``prehashed``) verifies."""
    from mncd.card.digestinfo import digest
    from mncd.jpki.signatures import SignatureMismatch, verify

    try:
        verify(certificate, signature, hash_name, data if prehashed else digest(hash_name, data))
    except SignatureMismatch:
        return False
    except ValueError as exc:
        raise VerificationError(_("the daemon returned a certificate that cannot be read")) from exc
    return True
