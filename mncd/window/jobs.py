"""Long actions (a PIN dialog, a signature, the doctor's checks) with progress and a cancel.

Each job that talks to the daemon has a connection of its own: cancelling closes it, and the
daemon then closes its PIN dialog with nothing sent to the card (it does so for any caller that
leaves the bus)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from gi.repository import GLib, Gtk

from mncd.client import MyNumberCard
from mncd.i18n import gettext as _
from mncd.window.loop import AsyncLoop, Job
from mncd.window.widgets import named


class JobBar:
    """The bar at the bottom of the window while a job runs: what it does, a progress bar that
    pulses, and Cancel (Escape). The job runs on ``loop``'s asyncio thread."""

    def __init__(self, loop: AsyncLoop) -> None:
        self.loop = loop
        self.widget = Gtk.Revealer(transition_type=Gtk.RevealerTransitionType.SLIDE_UP)
        box = Gtk.Box(spacing=12, margin_start=12, margin_end=12, margin_top=6, margin_bottom=6)
        self.label = Gtk.Label(xalign=0, hexpand=True, wrap=True)
        self.progress = named(Gtk.ProgressBar(valign=Gtk.Align.CENTER), _("Progress"))
        self.cancel = named(Gtk.Button(label=_("Cancel")), _("Cancel"))
        self.cancel.connect("clicked", lambda _button: self.stop())
        for child in (self.label, self.progress, self.cancel):
            box.append(child)
        self.widget.set_child(box)
        self.task: Job[Any] | None = None
        self._pulse = 0

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def run(
        self,
        text: str,
        work: Callable[[], Awaitable[Any]],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None],
    ) -> bool:
        """Run ``work()`` showing ``text``; then ``done(result)`` or ``failed(exception)``
        (not after Cancel). False when another job is running."""
        if self.busy:
            return False
        self.label.set_text(text)
        named(self.label, text)
        self.widget.set_reveal_child(True)
        self._pulse = GLib.timeout_add(120, self._tick)
        self.task = self.loop.submit(work, done, failed, finished=self._hide)
        self.cancel.grab_focus()
        return True

    def stop(self) -> None:
        """Cancel the running job (its task, on the asyncio thread)."""
        if self.busy:
            assert self.task is not None
            self.task.cancel()

    def _tick(self) -> bool:
        self.progress.pulse()
        return True

    def _hide(self) -> None:
        if self.busy:  # a cancelled job's end, told after the next job began
            return
        if self._pulse:
            GLib.source_remove(self._pulse)
            self._pulse = 0
        self.progress.set_fraction(0)
        self.widget.set_reveal_child(False)


async def with_daemon(
    body: Callable[[MyNumberCard], Awaitable[Any]], address: str | None = None
) -> Any:
    """``body(card)`` on a connection of its own, closed afterwards (also when cancelled)."""
    card = await MyNumberCard.connect(address)
    try:
        return await body(card)
    finally:
        with suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(card.close())


async def in_thread(function: Callable[[], Any]) -> Any:
    """``function()`` in a worker thread (blocking work: the doctor's checks, pyHanko)."""
    return await asyncio.get_running_loop().run_in_executor(None, function)
