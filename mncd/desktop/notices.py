"""What to tell the user, and when: expiry milestones, invalidation, blocked PINs.

The policy says the most urgent thing once. Each milestone (renewal window open, 30/7/1 days
left, expired; counted in Japan's calendar by :mod:`mncd.jpki.calendar`) is remembered per
certificate fingerprint in ``notices.json`` in the state directory once the notification server
has accepted it, so restarts and re-insertions never repeat a notice, and a notice that found no
server is still due after a restart; a card first seen 20 days before expiry gets the 30-day
notice only, and the renewal one is marked as passed without being shown. Texts come from the
gettext catalog (Japanese and English by the locale).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mncd.core.state import read_state_file, write_state_file
from mncd.i18n import translator
from mncd.jpki import calendar
from mncd.jpki.summary import CertificateSummary

log = logging.getLogger(__name__)

EXPIRED = calendar.EXPIRED
RENEWAL = calendar.RENEWAL
NORMAL, CRITICAL = 1, 2


@dataclass(frozen=True)
class NoticeText:
    """A notice ready for the desktop: one live notification per ``subject``."""

    subject: str
    category: str  # expiry, invalidated, pin-blocked, readers
    summary: str
    body: str
    urgency: int
    details: str = ""


def certificate_label(which: str) -> str:
    _ = translator().gettext
    return _("signing certificate") if which == "sign" else _("user-authentication certificate")


def expiry_message(
    card_id: str,
    which: str,
    summary: CertificateSummary,
    milestone: str,
    now: dt.datetime,
) -> NoticeText:
    """The notice for an expiry ``milestone`` (renewal, a day count, expired), dated and counted
    in Japan's calendar."""
    _ = translator().gettext
    label = certificate_label(which)
    subject = f"{card_id}:{which}:expiry"
    local_date = calendar.expiry_date(summary.not_after)
    date_text = _("{year}-{month:02d}-{day:02d}").format(
        year=local_date.year, month=local_date.month, day=local_date.day
    )
    if milestone == EXPIRED:
        return NoticeText(
            subject=subject,
            category="expiry",
            summary=_("Your {label} has expired").format(label=label),
            body=_(
                "It expired on {date}. Get a new one issued at your municipal office "
                "(bring your My Number Card)."
            ).format(date=date_text),
            urgency=CRITICAL,
        )
    days = max(summary.days_left(now), 0)
    body = _("It expires on {date}. You can renew it at your municipal office.").format(
        date=date_text
    )
    if milestone == RENEWAL:
        return NoticeText(
            subject=subject,
            category="expiry",
            summary=_("Your {label} can now be renewed").format(label=label),
            body=translator()
            .ngettext(
                "It expires on {date}, in {days} day. You can renew it at your municipal "
                "office from now on.",
                "It expires on {date}, in {days} days. You can renew it at your municipal "
                "office from now on.",
                days,
            )
            .format(date=date_text, days=days),
            urgency=NORMAL,
        )
    if days == 0:
        return NoticeText(
            subject=subject,
            category="expiry",
            summary=_("Your {label} expires today").format(label=label),
            body=body,
            urgency=CRITICAL,
        )
    return NoticeText(
        subject=subject,
        category="expiry",
        summary=translator()
        .ngettext(
            "Your {label} expires in {days} day",
            "Your {label} expires in {days} days",
            days,
        )
        .format(label=label, days=days),
        body=body,
        urgency=CRITICAL if days <= 7 else NORMAL,
    )


def renewed_message(card_id: str) -> NoticeText:
    """A card seen for the first time took the place of one due for renewal."""
    _ = translator().gettext
    return NoticeText(
        subject=f"{card_id}:auth:renewed",
        category="expiry",
        summary=_("Your certificates have been renewed"),
        body=_(
            "A renewed My Number Card was read: the new user-authentication certificate "
            "replaces the old one, and reminders for the old one stop."
        ),
        urgency=NORMAL,
    )


def invalidated_message(card_id: str, reason: str, fields: list[str]) -> NoticeText:
    """The signing certificate was revoked: say which kind of data changed, never the values."""
    _ = translator().gettext
    names = {
        "name": _("name"),
        "address": _("address"),
        "birth_date": _("birth date"),
        "sex": _("sex"),
    }
    if reason == "personal-data":
        changed = _(", ").join(names.get(f, f) for f in fields)
        body = _(
            "The {fields} on your card no longer match the certificate, so it was revoked "
            "automatically. Get a new signing certificate at your municipal office."
        ).format(fields=changed)
    elif reason == "replaced":
        # A renewal that worked: the news is the new certificate, the old one's end comes second.
        return NoticeText(
            subject=f"{card_id}:sign:invalidated",
            category="renewed",
            summary=_("A new signing certificate was found on your card"),
            body=_(
                "The signing certificate used before is no longer valid. Services where you "
                "registered it may need the new one."
            ),
            urgency=NORMAL,
        )
    else:
        body = _(
            "Your card no longer holds a usable signing certificate. Get a new one issued at "
            "your municipal office."
        )
    return NoticeText(
        subject=f"{card_id}:sign:invalidated",
        category="invalidated",
        summary=_("Your signing certificate is no longer valid"),
        body=body,
        urgency=CRITICAL,
    )


def pin_blocked_message(card_id: str, which: str) -> NoticeText:
    _ = translator().gettext
    if which == "sign":
        summary = _("The signing password is locked")
    else:
        summary = _("The user-authentication PIN is locked")
    return NoticeText(
        subject=f"{card_id}:{which}:pin",
        category="pin-blocked",
        summary=summary,
        body=_(
            "It was entered wrongly too many times. Have it reset at your municipal office "
            "(bring your My Number Card)."
        ),
        urgency=CRITICAL,
    )


def unsupported_reader_message(name: str) -> NoticeText:
    _ = translator().gettext
    return NoticeText(
        subject=f"reader:{name}",
        category="readers",
        summary=_("This card reader cannot be used"),
        body=_(
            "{name} is plugged in, but it is not a standard (CCID) smart-card reader, so the "
            "PC/SC service cannot use it without a separate driver."
        ).format(name=name),
        urgency=NORMAL,
    )


#: The notice log's key for the settings file; its milestones are digests of the problems told.
SETTINGS_KEY = "settings"


def settings_digest(problems: list[str]) -> str:
    """What identifies one set of settings problems: the same problems are told only once."""
    return hashlib.sha256("\n".join(problems).encode("utf-8")).hexdigest()[:16]


def settings_message(path: Path | None, problems: list[str]) -> NoticeText:
    _ = translator().gettext
    return NoticeText(
        subject=SETTINGS_KEY,
        category="settings",
        summary=_("Some settings could not be used"),
        body=_(
            "{path} has settings mncd cannot use; they keep their defaults and every other "
            "setting applies. Run 'mncctl doctor' to see which."
        ).format(path=path),
        urgency=NORMAL,
        details="\n".join(problems),
    )


class NoticeLog:
    """Which notices were already given, persisted in the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, list[str]] = self._load()

    def _load(self) -> dict[str, list[str]]:
        raw = read_state_file(self.path, "notice log")
        if not isinstance(raw, dict):
            return {}
        return {str(k): [str(x) for x in v] for k, v in raw.items() if isinstance(v, list)}

    def shown(self, key: str) -> set[str]:
        return set(self._data.get(key, []))

    def mark(self, key: str, milestones: set[str]) -> bool:
        """Record milestones for ``key``; True when something new was recorded."""
        current = self.shown(key)
        if milestones <= current:
            return False
        self._data[key] = sorted(current | milestones)
        self._save()
        return True

    def forget(self, keys: set[str]) -> None:
        """Drop everything recorded for ``keys`` (a card the user no longer has)."""
        if keys & set(self._data):
            for key in keys:
                self._data.pop(key, None)
            self._save()

    def clear(self, key: str, milestone: str) -> None:
        current = self.shown(key)
        if milestone in current:
            self._data[key] = sorted(current - {milestone})
            self._save()

    def _save(self) -> None:
        write_state_file(self.path, self._data)
