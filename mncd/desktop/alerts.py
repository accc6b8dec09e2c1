"""Decides which notices are due and hands them to the desktop, once each.

Checked at start, after card events and once a day (a timer, no polling), from the cache: every
card ever seen, with no card needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

from mncd.daemon.cache import CardRecord
from mncd.daemon.config import Config
from mncd.daemon.manager import CardManager
from mncd.desktop import notices
from mncd.desktop.notifications import DesktopNotifier, Notice
from mncd.i18n import translator
from mncd.jpki.certificates import generation_for

log = logging.getLogger(__name__)

ICONS = {"expiry": "appointment-soon", "invalidated": "dialog-error", "pin-blocked": "dialog-error"}


class NoticeCenter:
    """Turns the state of every known card into desktop notices."""

    def __init__(
        self,
        manager: CardManager,
        notifier: DesktopNotifier,
        config: Config,
        log_path: Path,
    ) -> None:
        self.manager = manager
        self.notifier = notifier
        self.config = config
        self.log = notices.NoticeLog(log_path)
        self._scheduled: asyncio.Task[None] | None = None
        self._readers_shown: set[str] = set()
        self.sent: list[notices.NoticeText] = []  #: what was handed to the desktop (for tests)

    def schedule(self) -> None:
        """Run a check soon; several requests in a row make one check."""
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.get_running_loop().create_task(self._check_soon())

    async def _check_soon(self) -> None:
        await asyncio.sleep(0.2)
        await self.check()

    async def daily(self) -> None:
        """Check every day shortly after local midnight."""
        while True:
            now = dt.datetime.now().astimezone()
            tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=1, second=0)
            await asyncio.sleep((tomorrow - now).total_seconds())
            await self.check()

    async def check(self, now: dt.datetime | None = None) -> None:
        now = now or dt.datetime.now(dt.UTC)
        loop = asyncio.get_running_loop()
        records = {r.card_id: r for r in await loop.run_in_executor(None, self.manager.cache.all)}
        for live in self.manager.cards.values():
            if live.record is not None:
                records[live.record.card_id] = live.record
        for record in records.values():
            try:
                await self._check_card(record, now)
            except Exception:
                log.exception("checking notices for card %s failed", record.card_id)
        await self._check_readers()
        log.debug("notices checked for %d card(s)", len(records))

    async def _check_card(self, record: CardRecord, now: dt.datetime) -> None:
        if record.renewed_to is not None:
            # Renewed: the old card's certificates say nothing any more; take back its notice.
            for which in ("auth", "sign"):
                await self.notifier.withdraw(f"{record.card_id}:{which}:expiry")
            return
        if record.renewed_from is not None and self.config.notify["expiry"]:
            key = f"{record.card_id}:renewed"
            if "shown" not in self.log.shown(key):
                await self._send(notices.renewed_message(record.card_id))
                self.log.mark(key, {"shown"})
        if self.config.notify["expiry"]:
            for which, cert in (("auth", record.auth), ("sign", record.sign)):
                if cert is None:
                    continue
                key = cert.summary.fingerprint
                renewal_days = generation_for(cert.summary.algorithm).renewal_window.days
                thresholds = tuple(sorted({*self.config.thresholds, renewal_days}, reverse=True))
                milestone, passed = notices.due_milestone(
                    cert.summary, thresholds, self.log.shown(key), now
                )
                if milestone is not None:
                    message = notices.expiry_message(
                        record.card_id,
                        which,
                        cert.summary,
                        milestone,
                        now,
                        renewal_opened=milestone == str(renewal_days),
                    )
                    await self._send(message, self._details(which, cert.summary))
                self.log.mark(key, passed)
        invalid = record.sign_invalidated
        if invalid and self.config.notify["invalidated"]:
            key = f"{invalid['fingerprint']}:invalidated"
            if invalid["reason"] not in self.log.shown(key):
                message = notices.invalidated_message(
                    record.card_id, invalid["reason"], invalid["fields"]
                )
                await self._send(message)
                self.log.mark(key, {invalid["reason"]})
        for which in ("auth", "sign"):
            key = f"{record.card_id}:{which}:pin"
            if record.pin_tries.get(which) == 0:
                if self.config.notify["pin-blocked"] and "blocked" not in self.log.shown(key):
                    await self._send(notices.pin_blocked_message(record.card_id, which))
                    self.log.mark(key, {"blocked"})
            elif record.pin_tries.get(which, 0) > 0:
                self.log.clear(key, "blocked")  # reset at the office: a new block notifies again

    async def _check_readers(self) -> None:
        names = set(self.manager.unsupported_readers())
        if self.config.notify["readers"]:
            for name in sorted(names - self._readers_shown):
                await self._send(notices.unsupported_reader_message(name))
        self._readers_shown = names

    def _details(self, which: str, summary: object) -> str:
        _ = translator().gettext
        serial = getattr(summary, "serial", "")
        return _("{label}: serial {serial}. Run 'mncctl status' for details.").format(
            label=notices.certificate_label(which), serial=serial
        )

    async def _send(self, message: notices.NoticeText, details: str = "") -> None:
        self.sent.append(message)
        log.info("notice: %s", message.subject)
        if not await self.notifier.show(to_notice(message, details)):
            log.info("no notification server yet; the notice waits for one")


def to_notice(message: notices.NoticeText, details: str = "") -> Notice:
    """The desktop notification for a message."""
    return Notice(
        subject=message.subject,
        summary=message.summary,
        body=message.body,
        urgency=message.urgency,
        category=f"x-mncd.{message.category}",
        details=details or message.details,
        icon=ICONS.get(message.category, "dialog-information"),
        details_label=translator().gettext("Details"),
    )
