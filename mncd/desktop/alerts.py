"""Decides which notices are due and hands them to the desktop, once each.

Checked at start, after card events, at midnight in Japan and after the wall clock jumped (see
:mod:`mncd.daemon.clock`), from the cache: every card ever seen, with no card needed.

A notice counts as given only once the notification server accepted it. Until then it stays
due: it waits in the notifier for a server to appear, and since nothing is marked shown, the
cache still says it is due after a restart; when a server appears it is shown, once. A notice
waiting for a server is not sent again while it waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mncd.api import RENEWAL_INFO_URL
from mncd.config import Config
from mncd.core.cache import CardRecord
from mncd.core.events import CardForgotten, CoreEvent, StateChanged
from mncd.core.manager import CardManager
from mncd.desktop import notices
from mncd.desktop.notifications import DesktopNotifier, Notice
from mncd.desktop.window_link import RENEWAL_ACTION
from mncd.i18n import translator
from mncd.jpki import calendar
from mncd.jpki.summary import CertificateSummary

log = logging.getLogger(__name__)

ICONS = {
    "expiry": "appointment-soon",
    "renewed": "emblem-default",
    "invalidated": "dialog-error",
    "pin-blocked": "dialog-error",
}
#: How the notice log named the renewal milestone before it was counted in calendar months:
#: the renewal window in days, by key algorithm.
LEGACY_RENEWAL_KEYS = {"rsa2048": "90", "ec-p384": "365"}


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
        #: Notices waiting for a server, by subject: the text, and what to record once shown.
        self._waiting: dict[str, tuple[notices.NoticeText, Callable[[], None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        notifier.on_shown = self._shown
        manager.events.subscribe(self._heard)

    def _heard(self, event: CoreEvent) -> None:
        """The core's events: any change may bring or withdraw a notice."""
        if isinstance(event, CardForgotten):
            self.forget(event.record)
        elif isinstance(event, StateChanged):
            self.schedule()

    def schedule(self) -> None:
        """Run a check soon; several requests in a row make one check."""
        if self._scheduled is None or self._scheduled.done():
            self._scheduled = asyncio.get_running_loop().create_task(self._check_soon())

    async def _check_soon(self) -> None:
        await asyncio.sleep(0.2)
        await self.check()

    async def check(self, now: dt.datetime | None = None) -> None:
        now = now or self.manager.clock()
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
        await self._check_settings()
        log.debug("notices checked for %d card(s)", len(records))

    async def _check_card(self, record: CardRecord, now: dt.datetime) -> None:
        if record.renewed_to is not None:
            # Renewed: the old card's certificates say nothing any more; take back its notice.
            for which in ("auth", "sign"):
                self._waiting.pop(f"{record.card_id}:{which}:expiry", None)
                await self.notifier.withdraw(f"{record.card_id}:{which}:expiry")
            return
        if record.renewed_from is not None and self.config.notify["expiry"]:
            key = f"{record.card_id}:renewed"
            if "shown" not in self.log.shown(key):
                await self._send(notices.renewed_message(record.card_id), key, "shown")
        if self.config.notify["expiry"]:
            for which, cert in (("auth", record.auth), ("sign", record.sign)):
                if cert is not None:
                    await self._check_expiry(record.card_id, which, cert.summary, now)
        invalid = record.sign_invalidated
        if invalid and self.config.notify["invalidated"]:
            key = f"{invalid['fingerprint']}:invalidated"
            if invalid["reason"] not in self.log.shown(key):
                message = notices.invalidated_message(
                    record.card_id, invalid["reason"], invalid["fields"]
                )
                await self._send(message, key, invalid["reason"])
        for which in ("auth", "sign"):
            key = f"{record.card_id}:{which}:pin"
            if record.pin_tries.get(which) == 0:
                if self.config.notify["pin-blocked"] and "blocked" not in self.log.shown(key):
                    await self._send(notices.pin_blocked_message(record.card_id, which), key,
                                     "blocked")  # fmt: skip
            elif record.pin_tries.get(which, 0) > 0 and "blocked" in self.log.shown(key):
                # Reset at the office: the lock notice goes, and a new block notifies again.
                self.log.clear(key, "blocked")
                self._waiting.pop(key, None)
                await self.notifier.withdraw(key)

    async def _check_expiry(
        self, card_id: str, which: str, summary: CertificateSummary, now: dt.datetime
    ) -> None:
        """The expiry milestone due for one certificate, by Japan's calendar, once."""
        key = summary.fingerprint
        shown = self.log.shown(key)
        legacy = LEGACY_RENEWAL_KEYS.get(summary.algorithm)
        if legacy in shown and int(legacy) not in self.config.thresholds:
            shown.add(calendar.RENEWAL)
        milestone, reached = calendar.due_milestone(
            summary.not_after,
            summary.generation.renewal_months,
            self.config.thresholds,
            shown,
            now,
        )
        # Milestones passed over are recorded now; the one told, once the server accepted it.
        self.log.mark(key, reached - {milestone} if milestone else reached)
        if milestone is not None:
            message = notices.expiry_message(card_id, which, summary, milestone, now)
            await self._send(message, key, milestone, self._details(which, summary))

    async def _check_readers(self) -> None:
        names = set(self.manager.unsupported_readers())
        self._readers_shown &= names  # a reader unplugged and plugged again is told again
        if self.config.notify["readers"]:
            for name in sorted(names - self._readers_shown):
                await self._send(
                    notices.unsupported_reader_message(name),
                    on_shown=lambda name=name: self._readers_shown.add(name),
                )

    async def _check_settings(self) -> None:
        """Problems in the settings file, told once: the same problems not again after a
        restart, new or different ones again."""
        problems = self.config.problems
        if not problems:
            self.log.forget({notices.SETTINGS_KEY})
            return
        digest = notices.settings_digest(problems)
        if digest not in self.log.shown(notices.SETTINGS_KEY):
            message = notices.settings_message(self.config.path, problems)
            await self._send(message, notices.SETTINGS_KEY, digest)

    def _details(self, which: str, summary: object) -> str:
        _ = translator().gettext
        serial = getattr(summary, "serial", "")
        return _("{label}: serial {serial}. Run 'mncctl status' for details.").format(
            label=notices.certificate_label(which), serial=serial
        )

    async def _send(
        self,
        message: notices.NoticeText,
        key: str = "",
        milestone: str = "",
        details: str = "",
        on_shown: Callable[[], None] | None = None,
    ) -> None:
        """Hand ``message`` to the desktop; record ``milestone`` for ``key`` (and call
        ``on_shown``) once the server has accepted it, now or when a server appears."""

        def shown() -> None:
            if key:
                self.log.mark(key, {milestone})
            if on_shown is not None:
                on_shown()

        waiting = self._waiting.get(message.subject)
        if waiting is not None and waiting[0] == message:
            return  # already waiting for a server: sent once it appears
        self._waiting[message.subject] = (message, shown)
        self.sent.append(message)
        log.info("notice: %s", message.subject)
        if not await self.notifier.show(to_notice(message, details)):
            log.info("no notification server yet; the notice waits for one")

    def _shown(self, subject: str) -> None:
        """The notifier's word that the server accepted the notice for ``subject``."""
        waiting = self._waiting.pop(subject, None)
        if waiting is not None:
            waiting[1]()

    def forget(self, record: CardRecord) -> None:
        """A card the user no longer has: its reminders go, on screen and in the log."""
        keys = {f"{record.card_id}:renewed"}
        keys |= {f"{record.card_id}:{which}:pin" for which in ("auth", "sign")}
        for cert in (record.auth, record.sign):
            if cert is not None:
                keys |= {cert.summary.fingerprint, f"{cert.summary.fingerprint}:invalidated"}
        if record.sign_invalidated:
            keys.add(f"{record.sign_invalidated['fingerprint']}:invalidated")
        self.log.forget(keys)
        subjects = [f"{record.card_id}:{which}:{what}" for which in ("auth", "sign")
                    for what in ("expiry", "pin", "invalidated", "renewed")]  # fmt: skip
        for subject in subjects:
            self._waiting.pop(subject, None)
        task = asyncio.get_running_loop().create_task(self._withdraw_all(subjects))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _withdraw_all(self, subjects: list[str]) -> None:
        for subject in subjects:
            await self.notifier.withdraw(subject)


def to_notice(message: notices.NoticeText, details: str = "") -> Notice:
    """The desktop notification for a message; one about renewal links J-LIS's page on it."""
    _ = translator().gettext
    links: tuple[tuple[str, str], ...] = ()
    markup = ""
    if message.category == "expiry":
        links = ((RENEWAL_ACTION, _("How to renew")),)
        markup = (
            f"{html.escape(message.body, quote=False)}\n"
            f'<a href="{html.escape(RENEWAL_INFO_URL)}">{html.escape(_("How to renew"))}</a>'
        )
    return Notice(
        subject=message.subject,
        summary=message.summary,
        body=message.body,
        urgency=message.urgency,
        category=f"x-mncd.{message.category}",
        details=details or message.details,
        icon=ICONS.get(message.category, "dialog-information"),
        details_label=_("Details"),
        markup=markup,
        links=links,
    )
