"""Persistent per-card cache under ``$XDG_STATE_HOME/mncd``: private, atomic, never trusted blindly.

One JSON file per card (``cards/<card id>.json``). Kept in clear: the public certificates
(authentication certificate and both CA certificates) with their summaries, and, for the signing
certificate, only its summary (dates, serial, fingerprint, issuer). A summary kept with its DER is
bound to it (its fingerprint is the DER's SHA-256, a checksum covers the summary), so loading the
cache parses no certificate. The signing certificate itself carries name, address,
birth date and sex, which the card guards with the signing password; it is never written here.
The card's manufacture number is kept only as a keyed hash (HMAC-SHA-256 under a random salt of
this user, ``salt``), enough to recognise the same physical card again and nothing more.

Files are 0600 in 0700 directories, written to a temporary file, fsynced and renamed over the old
one. A file that is unreadable, malformed, not ours or open to others is moved aside (quarantined)
and treated as absent; the next card read rebuilds it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mncd.api import CARD_ID_DIGITS
from mncd.core.state import atomic_write, quarantine, read_private
from mncd.jpki.summary import CertificateSummary

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_FILE_SIZE = 256 * 1024
SALT_SIZE = 32
#: Temporary files older than this were left by a crash in the middle of a write.
STALE_TEMP_SECONDS = 60


def default_root() -> Path:
    """``$XDG_STATE_HOME/mncd``, by default ``~/.local/state/mncd``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return Path(base) / "mncd"


def summarize(der: bytes) -> CertificateSummary:
    """The public summary of a DER certificate (CertificateError when it is none).

    The X.509 parser, and cryptography with it, is imported here on first use: the daemon
    loads its cache and is ready without it.
    """
    from mncd.jpki import certificates

    return certificates.summarize(der)


@dataclass
class CertificateRecord:
    """A certificate as cached: its public summary, and the DER only when it is public."""

    summary: CertificateSummary
    der: bytes | None = None

    @classmethod
    def of(cls, der: bytes) -> CertificateRecord:
        """A public certificate with the summary read from it."""
        return cls(summarize(der), der)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serial": self.summary.serial,
            "fingerprint": self.summary.fingerprint,
            "issuer": self.summary.issuer,
            "not_before": int(self.summary.not_before.timestamp()),
            "not_after": int(self.summary.not_after.timestamp()),
            "algorithm": self.summary.algorithm,
        }
        if self.der is not None:
            out["summary_sha256"] = _summary_checksum(out)
            out["der"] = base64.b64encode(self.der).decode("ascii")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertificateRecord:
        der = base64.b64decode(data["der"], validate=True) if "der" in data else None
        summary = CertificateSummary(
            serial=_str(data["serial"]),
            fingerprint=_str(data["fingerprint"]),
            issuer=_str(data["issuer"]),
            not_before=dt.datetime.fromtimestamp(int(data["not_before"]), dt.UTC),
            not_after=dt.datetime.fromtimestamp(int(data["not_after"]), dt.UTC),
            algorithm=_str(data["algorithm"]),
        )
        if der is None:
            return cls(summary)
        if hashlib.sha256(der).hexdigest() != summary.fingerprint:
            raise ValueError("certificate does not match its fingerprint")
        if "summary_sha256" not in data:  # written before the checksum: read the DER itself
            return cls.of(der)
        if data["summary_sha256"] != _summary_checksum(data):
            raise ValueError("certificate summary does not match its checksum")
        return cls(summary, der)


#: The fields a cached certificate summary is made of (see :func:`_summary_checksum`).
SUMMARY_FIELDS = ("serial", "fingerprint", "issuer", "not_before", "not_after", "algorithm")


def _summary_checksum(data: dict[str, Any]) -> str:
    """SHA-256 over the summary fields of a cached certificate, as they were read from its DER
    (the fingerprint among them binds the DER): a summary changed on disk is noticed."""
    fields = {name: data[name] for name in SUMMARY_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def _finite(value: Any) -> float:
    """A real number of seconds: infinity or NaN would sort a record first for ever."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


@dataclass
class CardRecord:
    """What mncd remembers about one card."""

    card_id: str
    token: str = "card"
    last_seen: float = field(default_factory=time.time)
    auth: CertificateRecord | None = None
    auth_ca: CertificateRecord | None = None
    sign_ca: CertificateRecord | None = None
    sign: CertificateRecord | None = None  #: summary only, never the DER
    sign_present: bool = True
    pin_tries: dict[str, int] = field(default_factory=dict)
    #: {"fingerprint", "reason", "fields"} when the signing certificate was found invalid;
    #: ``fields`` names kinds of personal data (e.g. "address"), never their values.
    sign_invalidated: dict[str, Any] | None = None
    #: Card ids linking the certificates of one physical card: renewed_from is the card id
    #: its certificates had before a renewal (see CardManager._link_renewal).
    renewed_to: str | None = None
    renewed_from: str | None = None
    #: Keyed hash of the card's manufacture number (see :func:`manufacture_hash`); None when
    #: it could not be read, or the record is older than this field.
    manufacture_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        entries = {
            name: rec.to_json()
            for name, rec in (
                ("auth", self.auth),
                ("auth-ca", self.auth_ca),
                ("sign-ca", self.sign_ca),
                ("sign", self.sign),
            )
            if rec is not None
        }
        entries.get("sign", {}).pop("der", None)
        return {
            "version": FORMAT_VERSION,
            "card_id": self.card_id,
            "token": self.token,
            "last_seen": self.last_seen,
            "sign_present": self.sign_present,
            "pin_tries": self.pin_tries,
            "sign_invalidated": self.sign_invalidated,
            "renewed_to": self.renewed_to,
            "renewed_from": self.renewed_from,
            "manufacture_hash": self.manufacture_hash,
            "certificates": entries,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CardRecord:
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("unknown cache format")
        entries = data.get("certificates", {})
        if not isinstance(entries, dict):
            raise ValueError("certificates must be an object")

        def cert(name: str) -> CertificateRecord | None:
            return CertificateRecord.from_json(entries[name]) if name in entries else None

        tries = data.get("pin_tries", {})
        if not isinstance(tries, dict) or not all(isinstance(v, int) for v in tries.values()):
            raise ValueError("pin_tries must map names to numbers")
        record = cls(
            card_id=_str(data["card_id"]),
            token=_str(data.get("token", "card")),
            last_seen=_finite(data["last_seen"]),
            auth=cert("auth"),
            auth_ca=cert("auth-ca"),
            sign_ca=cert("sign-ca"),
            sign=cert("sign"),
            sign_present=bool(data.get("sign_present", True)),
            pin_tries=dict(tries),
            sign_invalidated=_invalidation(data.get("sign_invalidated")),
            renewed_to=_optional_id(data.get("renewed_to")),
            renewed_from=_optional_id(data.get("renewed_from")),
            manufacture_hash=_optional_id(data.get("manufacture_hash")),
        )
        if record.sign is not None:
            record.sign.der = None
        return record


def is_card_id(value: Any) -> bool:
    """Card ids are lower-case hex (a file name, so nothing else is allowed)."""
    return isinstance(value, str) and bool(value) and all(c in "0123456789abcdef" for c in value)


def _optional_id(value: Any) -> str | None:
    if value is None:
        return None
    if not is_card_id(value):
        raise ValueError("malformed card id")
    return value


def _invalidation(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("fingerprint"), str)
        or not isinstance(value.get("reason"), str)
        or not all(isinstance(f, str) for f in value.get("fields", []))
    ):
        raise ValueError("malformed invalidation record")
    return {
        "fingerprint": value["fingerprint"],
        "reason": value["reason"],
        "fields": list(value.get("fields", [])),
    }


def card_id_for(auth_der: bytes) -> str:
    """A card's cache key: derived from its (public) authentication certificate (the first half
    of its fingerprint)."""
    return hashlib.sha256(auth_der).hexdigest()[:CARD_ID_DIGITS]


def manufacture_hash(salt: bytes, number: str) -> str:
    """What is kept of a manufacture number: HMAC-SHA-256 under the user's salt, so the same
    card is recognised without the number itself being stored anywhere."""
    return hmac.new(salt, number.encode("ascii"), hashlib.sha256).hexdigest()[:32]


class CardCache:
    """The per-card cache directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.cards_dir = self.root / "cards"

    def _ensure_dirs(self) -> None:
        for path in (self.root, self.cards_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(path.stat().st_mode) != 0o700:
                os.chmod(path, 0o700)

    def path_for(self, card_id: str) -> Path:
        if not is_card_id(card_id):
            raise ValueError("bad card id")
        return self.cards_dir / f"{card_id}.json"

    def save(self, record: CardRecord) -> None:
        """Write ``record`` atomically (old or new version on disk, never a mix)."""
        self._ensure_dirs()
        data = json.dumps(record.to_json(), indent=1, sort_keys=True).encode("utf-8")
        path = self.path_for(record.card_id)
        atomic_write(path, data)
        self._remove_stale_temporaries(path)

    def delete(self, card_id: str) -> bool:
        """Remove the record of ``card_id``; False when there was none."""
        try:
            self.path_for(card_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def salt(self) -> bytes:
        """This user's random salt for :func:`manufacture_hash`, made on first use (``salt``,
        0600). A salt that cannot be trusted is moved aside and replaced: cards seen before
        are then simply not recognised, never confused."""
        path = self.root / "salt"
        data = read_private(path, SALT_SIZE)
        if data is not None and len(data) == SALT_SIZE:
            return data
        if data is not None:
            log.warning("the salt file has the wrong size; replacing it")
            quarantine(path, "corrupt")
        self._ensure_dirs()
        atomic_write(path, os.urandom(SALT_SIZE))
        data = read_private(path, SALT_SIZE)
        if data is None or len(data) != SALT_SIZE:
            raise OSError("cannot create the salt file")
        return data

    def _remove_stale_temporaries(self, path: Path) -> None:
        """Delete temporary files a crash left behind mid-write (they are never read)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for temporary in path.parent.glob(f".{path.name}.*"):
            with contextlib.suppress(OSError):
                if temporary.lstat().st_mtime < cutoff:
                    temporary.unlink()

    def load(self, card_id: str) -> CardRecord | None:
        """The record of ``card_id``, or None when absent or not trustworthy (then quarantined)."""
        return self._load_path(self.path_for(card_id))

    def all(self) -> list[CardRecord]:
        """Every trustworthy record, most recently seen first."""
        if not self.cards_dir.is_dir():
            return []
        records = [
            record
            for path in sorted(self.cards_dir.glob("*.json"))
            if (record := self._load_path(path)) is not None
        ]
        return sorted(records, key=lambda r: r.last_seen, reverse=True)

    def last(self) -> CardRecord | None:
        """The card seen most recently."""
        records = self.all()
        return records[0] if records else None

    def _load_path(self, path: Path) -> CardRecord | None:
        raw = read_private(path, MAX_FILE_SIZE)
        if raw is None:
            return None
        try:
            record = CardRecord.from_json(json.loads(raw.decode("utf-8")))
            if path.stem != record.card_id:
                raise ValueError("file name does not match its card")
            return record
        except (
            ValueError,  # also bad JSON, bad UTF-8, bad base64 and certificates
            KeyError,
            TypeError,
            OverflowError,  # dates or numbers out of range
            RecursionError,  # absurdly nested JSON
        ) as exc:
            log.warning(
                "cache file %s is corrupt (%s); it will be rebuilt", path.name, type(exc).__name__
            )
            quarantine(path, "corrupt")
            return None
