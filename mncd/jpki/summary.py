"""What status needs to know about a certificate: its public summary and the card generation its
key belongs to. No X.509 parser here (:mod:`mncd.jpki.certificates` makes summaries), so the daemon
can load its cache and answer before cryptography is imported; the records are NamedTuples, quick
to define at start.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from mncd.jpki import calendar


class CardGeneration(NamedTuple):
    """What differs between card generations: key algorithm and when renewal opens."""

    name: str
    algorithm: str  # as key_algorithm() names it
    #: Renewal opens this many calendar months before the expiry date (see jpki.calendar).
    renewal_months: int


#: Today's card: RSA-2048, renewal from 3 months before expiry.
CURRENT_CARD = CardGeneration("jpki", "rsa2048", 3)
#: The planned next-generation card (ECDSA P-384, renewal from 1 year before); provisional,
#: from public reports: the real card's layout is not public yet.
NEXT_GENERATION = CardGeneration("next-generation-provisional", "ec-p384", 12)
GENERATIONS = (CURRENT_CARD, NEXT_GENERATION)


def generation_for(algorithm: str) -> CardGeneration:
    """The card generation a certificate's key algorithm belongs to (today's card if unknown)."""
    return next((g for g in GENERATIONS if g.algorithm == algorithm), CURRENT_CARD)


class CertificateSummary(NamedTuple):
    """What status needs to know about a certificate, with no personal data."""

    serial: str
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    algorithm: str  # e.g. rsa2048, ec-p384

    @property
    def generation(self) -> CardGeneration:
        return generation_for(self.algorithm)

    def days_left(self, now: dt.datetime | None = None) -> int:
        """Japanese calendar days until the expiry date (0 on the last day, negative after)."""
        return calendar.days_left(self.not_after, now or dt.datetime.now(dt.UTC))

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return calendar.is_expired(self.not_after, now or dt.datetime.now(dt.UTC))

    def state(self, now: dt.datetime | None = None) -> str:
        """``valid``, ``expiring`` (renewal open) or ``expired`` in Japan's calendar."""
        now = now or dt.datetime.now(dt.UTC)
        return calendar.state(self.not_after, self.generation.renewal_months, now)
