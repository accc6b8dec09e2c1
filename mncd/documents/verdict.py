"""What a verification found, as plain data a window or a script can show: for each signature
three parts — intact, trusted, valid in time — and one verdict for the file.

The texts inside (problems, notes, what a signature covers) are already in the user's language;
everything else is codes, dates and booleans. :mod:`mncd.documents.report` turns it into lines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Verdict(enum.Enum):
    """The outcome for a signature or a whole file (worst first in :data:`WORST_FIRST`)."""

    VALID = "valid"  #: intact, anchored at the right CA, certificate valid at the judged time
    UNTRUSTED = "untrusted"  #: intact, but the certificate does not chain to a known CA
    #: intact, but the certificate is expired or known revoked now and no RFC 3161 timestamp
    #: proves the signature was made before
    EXPIRED = "expired"
    INVALID = "invalid"  #: changed, unreadable, or a certificate rule broken
    NO_SIGNATURE = "no-signature"  #: the file carries no signature at all


#: The verdict of a file with several signatures is the worst of theirs.
WORST_FIRST = (Verdict.INVALID, Verdict.EXPIRED, Verdict.UNTRUSTED, Verdict.VALID)


class TimeBasis(enum.Enum):
    """Which moment the certificate was judged at."""

    TIMESTAMP = "timestamp"  #: the time an RFC 3161 timestamp proves the signature existed
    NOW = "now"  #: no timestamp: the present moment


class Validity(enum.Enum):
    """The signing certificate at the judged moment."""

    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"  #: revoked before the judged moment (known from a CRL given)
    NOT_YET_VALID = "not-yet-valid"
    UNKNOWN = "unknown"  #: no readable certificate


@dataclass
class Intact:
    """Part one: the bytes are what was signed."""

    ok: bool = False
    covers: str = ""  #: what the signature covers, in words
    problems: list[str] = field(default_factory=list)


@dataclass
class Trust:
    """Part two: the certificate chains to a CA of the right kind."""

    ok: bool = False
    anchor: str = ""  #: the CA it chains to, in words ("" when none)
    problems: list[str] = field(default_factory=list)  #: broken rules (not only "no anchor")


@dataclass
class Timing:
    """Part three: the certificate was valid when the signature was made, as far as is proven."""

    basis: TimeBasis = TimeBasis.NOW
    moment: dt.datetime | None = None  #: the moment judged at (proven time, or now)
    validity: Validity = Validity.UNKNOWN
    claimed: dt.datetime | None = None  #: the signer's own computer's time (/M, signingTime)
    claimed_zone_assumed: bool = False  #: the claim had no time zone: read as Japan's time
    timestamp_authority: str = ""  #: who proved the time (the TSA's name)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.validity is Validity.VALID and not self.problems


@dataclass
class SignatureCheck:
    """One signature's result."""

    label: str  #: the signature field's name, or the .p7s file (and signer number)
    signer: str = ""  #: the holder's name in the certificate (or its subject)
    serial: str = ""
    issuer: str = ""
    intact: Intact = field(default_factory=Intact)
    trust: Trust = field(default_factory=Trust)
    timing: Timing = field(default_factory=Timing)
    notes: list[str] = field(default_factory=list)

    @property
    def covers(self) -> str:
        return self.intact.covers

    @property
    def anchor(self) -> str:
        return self.trust.anchor

    @property
    def signed_at(self) -> dt.datetime | None:
        """The signer's claimed time (a claim: see :attr:`timing`)."""
        return self.timing.claimed

    @property
    def problems(self) -> list[str]:
        return [*self.intact.problems, *self.trust.problems, *self.timing.problems]

    @property
    def verdict(self) -> Verdict:
        if not self.intact.ok or self.intact.problems or self.trust.problems:
            return Verdict.INVALID
        if self.timing.problems or self.timing.validity in (
            Validity.NOT_YET_VALID,
            Validity.UNKNOWN,
        ):
            return Verdict.INVALID
        if self.timing.validity in (Validity.EXPIRED, Validity.REVOKED):
            # Proven by a timestamp this would be a problem above; here nothing proves when.
            return Verdict.EXPIRED
        return Verdict.VALID if self.trust.ok else Verdict.UNTRUSTED


@dataclass
class DocumentTimestamp:
    """An RFC 3161 document timestamp (/DocTimeStamp) in a PDF."""

    label: str
    time: dt.datetime | None = None
    authority: str = ""  #: the TSA's name
    intact: bool = False
    trusted: bool = False  #: the TSA chains to a CA mncd trusts for timestamps
    revision: int = 0  #: the revision it covers (1-based)
    problems: list[str] = field(default_factory=list)


@dataclass
class Verification:
    """A file's result: every signature in it."""

    file: Path
    kind: str  #: pdf or cms
    signature_file: Path | None = None  #: the detached .p7s (cms)
    signatures: list[SignatureCheck] = field(default_factory=list)
    timestamps: list[DocumentTimestamp] = field(default_factory=list)
    unsigned_fields: list[str] = field(default_factory=list)  #: empty signature fields
    problems: list[str] = field(default_factory=list)  #: about the file as a whole

    @property
    def verdict(self) -> Verdict:
        if self.problems:
            return Verdict.INVALID
        if not self.signatures:
            return Verdict.NO_SIGNATURE
        verdicts = {check.verdict for check in self.signatures}
        return next(worst for worst in WORST_FIRST if worst in verdicts)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data (codes in English, texts in the user's language)."""
        data = _plain(dataclasses.asdict(self))
        data["verdict"] = self.verdict.value
        for check, out in zip(self.signatures, data["signatures"], strict=True):
            out["verdict"] = check.verdict.value
            out["timing"]["ok"] = check.timing.ok
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
