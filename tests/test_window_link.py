"""Which matter of the window a notice opens (mncd.desktop.window_link), for every kind of
notice mncd gives."""

from __future__ import annotations

import pytest

from mncd.desktop import notices
from mncd.desktop.window_link import matter_of

CARD = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("subject", "matter"),
    [
        (notices.pin_blocked_message(CARD, "auth").subject, "pin-auth"),
        (notices.pin_blocked_message(CARD, "sign").subject, "pin-sign"),
        (notices.invalidated_message(CARD, "personal-data", ["address"]).subject, "sign"),
        (notices.renewed_message(CARD).subject, "card"),
        (notices.unsupported_reader_message("Sony RC-S380").subject, "doctor"),
        (notices.settings_message(None, ["x"]).subject, "doctor"),
        (f"{CARD}:auth:expiry", "auth"),
        (f"{CARD}:sign:expiry", "sign"),
        ("anything else", "card"),
    ],
)
def test_each_notice_opens_its_matter(subject, matter):
    assert matter_of(subject) == matter
