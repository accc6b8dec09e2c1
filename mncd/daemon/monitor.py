"""Watches PC/SC readers and cards, and tells the asyncio loop what changed.

A thread blocks in ``SCardGetStatusChange`` on every reader plus the ``\\\\?PnP?\\Notification``
pseudo-reader (reader hotplug); ``SCardCancel`` wakes it for shutdown. When pcscd is missing or
goes away the monitor reports it and keeps trying to reconnect, so the daemon recovers by itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from smartcard import scard

from mncd.core.events import (
    CardAbsent,
    CardPresent,
    MonitorEvent,
    PcscUnavailable,
    ReadersChanged,
    Scanned,
)

log = logging.getLogger(__name__)

PNP_READER = "\\\\?PnP?\\Notification"
WAIT_MS = 60_000
RETRY_SECONDS = 1.0


class PcscMonitor:
    """Runs the PC/SC wait loop in a thread and posts :data:`MonitorEvent` s to the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[MonitorEvent], None],
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._loop = loop
        self._on_event = on_event
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._context: int | None = None
        self._thread = threading.Thread(target=self._run, name="pcsc-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        context = self._context
        if context is not None:
            scard.SCardCancel(context)
        self._thread.join(timeout=5)

    def rescan(self) -> None:
        """Wake the wait loop so it lists readers again (e.g. after udev saw a reader)."""
        context = self._context
        if context is not None:
            scard.SCardCancel(context)

    def _emit(self, event: MonitorEvent) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_event, event)

    def _run(self) -> None:
        announced_unavailable = False
        while not self._stop.is_set():
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                if not announced_unavailable:
                    log.warning(
                        "PC/SC service unavailable: %s", scard.SCardGetErrorMessage(hresult)
                    )
                    self._emit(PcscUnavailable())
                    announced_unavailable = True
                self._stop.wait(self._retry)
                continue
            self._context = context
            try:
                announced_unavailable = False
                self._watch(context)
            finally:
                self._context = None
                scard.SCardReleaseContext(context)
            if not self._stop.is_set():
                self._emit(PcscUnavailable())
                announced_unavailable = True
                self._stop.wait(self._retry)

    def _watch(self, context: int) -> None:
        """Follow one PC/SC context until it fails or the monitor stops."""
        readers: tuple[str, ...] | None = None
        states: dict[str, int] = {}
        present: dict[str, bool] = {}
        scanned = False
        while not self._stop.is_set():
            hresult, listed = scard.SCardListReaders(context, [])
            if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
                listed = []
            elif hresult != scard.SCARD_S_SUCCESS:
                log.info("listing readers failed: %s", scard.SCardGetErrorMessage(hresult))
                return
            current = tuple(listed)
            if current != readers:
                readers = current
                self._emit(ReadersChanged(current))
                for gone in set(present) - set(current):
                    if present.pop(gone):
                        self._emit(CardAbsent(gone))
                    states.pop(gone, None)
            if not current and not scanned:  # no reader: nothing more to report
                scanned = True
                self._emit(Scanned())
            query = [(PNP_READER, states.get(PNP_READER, scard.SCARD_STATE_UNAWARE))]
            query += [(r, states.get(r, scard.SCARD_STATE_UNAWARE)) for r in current]
            while not self._stop.is_set():
                hresult, result = scard.SCardGetStatusChange(context, WAIT_MS, query)
                if hresult == scard.SCARD_E_TIMEOUT:
                    continue
                if hresult == scard.SCARD_E_CANCELLED:
                    break  # stop, or rescan requested
                if hresult != scard.SCARD_S_SUCCESS:
                    log.info("PC/SC wait failed: %s", scard.SCardGetErrorMessage(hresult))
                    return
                query = []
                hotplug = False
                for reader, state, atr in result:
                    states[reader] = state & ~scard.SCARD_STATE_CHANGED
                    query.append((reader, states[reader]))
                    if reader == PNP_READER:
                        hotplug = hotplug or bool(state & scard.SCARD_STATE_CHANGED)
                        continue
                    has_card = bool(state & scard.SCARD_STATE_PRESENT) and not (
                        state & scard.SCARD_STATE_MUTE
                    )
                    if present.get(reader, False) != has_card:
                        present[reader] = has_card
                        if has_card:
                            self._emit(CardPresent(reader, bytes(atr)))
                        else:
                            self._emit(CardAbsent(reader))
                if not scanned:
                    scanned = True
                    self._emit(Scanned())
                if hotplug:
                    break
