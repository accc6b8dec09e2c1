"""Which physical card a card is: renewal links between the records of one card, on evidence only.

Cards are known by their authentication certificate (the card id), which renewal at the office
replaces, so a renewed card looks new. The same manufacture number (kept as a keyed hash, see
:func:`mncd.core.cache.manufacture_hash`) is the evidence that two records are one physical card;
without it nothing is linked: a family member's card is another card, with its own reminders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from mncd.core.cache import CardRecord

log = logging.getLogger(__name__)


def latest_with(records: Iterable[CardRecord], physical: str) -> CardRecord | None:
    """The latest record of the physical card with this manufacture hash, if known."""
    same = [r for r in records if r.manufacture_hash == physical]
    current = [r for r in same if r.renewed_to is None] or same
    return max(current, key=lambda r: r.last_seen, default=None)


def link_renewal(record: CardRecord, known: Iterable[CardRecord]) -> list[CardRecord]:
    """Link ``record``, seen for the first time, to the records the same physical card had
    before (a renewal at the office); the earlier records changed are returned (to be saved)."""
    if record.manufacture_hash is None:
        return []
    earlier = [
        other
        for other in known
        if other.card_id != record.card_id
        and other.manufacture_hash == record.manufacture_hash
        and other.renewed_to is None
    ]
    if not earlier:
        return []
    previous = max(earlier, key=lambda r: r.last_seen)
    log.info("card %s holds the renewed certificates of card %s", record.card_id,
             previous.card_id)  # fmt: skip
    record.renewed_from = previous.card_id
    for old in earlier:
        old.renewed_to = record.card_id
    return earlier


def drop_unproven_links(known: Mapping[str, CardRecord]) -> list[CardRecord]:
    """Undo renewal links that rest on no evidence (made by guessing, before cards were
    recognised by their manufacture number): both ends must be the same physical card. The
    records changed are returned (to be saved)."""
    changed = []
    for record in known.values():
        dropped = False
        for attr in ("renewed_to", "renewed_from"):
            linked = getattr(record, attr)
            if linked is None:
                continue
            other = known.get(linked)
            if (
                other is None
                or record.manufacture_hash is None
                or other.manufacture_hash != record.manufacture_hash
            ):
                setattr(record, attr, None)
                dropped = True
        if dropped:
            changed.append(record)
    return changed
