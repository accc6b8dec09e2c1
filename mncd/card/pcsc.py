"""A PC/SC card connection through pyscard (pcsc-lite on Linux).

Maps PC/SC failures to the card layer's typed errors: pcscd gone → :class:`PcscUnavailableError`,
card pulled → :class:`CardRemovedError`, card reset by another program → :class:`CardResetError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from smartcard import scard

from .errors import (
    CardInUseError,
    CardRemovedError,
    CardResetError,
    NoCardError,
    NoReaderError,
    PcscUnavailableError,
    TransportError,
)

# An invalid handle after pcscd restarted means the service we knew is gone; a transport
# ("RPC") error is what a call gets when pcscd dies while answering it.
_UNAVAILABLE = {
    scard.SCARD_E_NO_SERVICE,
    scard.SCARD_E_SERVICE_STOPPED,
    scard.SCARD_E_INVALID_HANDLE,
    scard.SCARD_F_COMM_ERROR,
}
#: How long to wait for pcscd to confirm a removal after an empty answer: 20 × 0.1 s.
STATUS_POLLS = 20
STATUS_POLL_INTERVAL = 0.1
# SCardStatus state bits (pcsc-lite's pcsclite.h; pyscard does not export them).
_PCSC_ABSENT = 0x0002
_PCSC_PRESENT = 0x0004
_REMOVED = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD}
_RESET = {scard.SCARD_W_RESET_CARD}
_NO_READER = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE}


def pcsc_error(hresult: int, action: str) -> TransportError:
    """The typed error for a failed PC/SC call."""
    text = f"{action}: {scard.SCardGetErrorMessage(hresult)}"
    if hresult in _UNAVAILABLE:
        return PcscUnavailableError(text)
    if hresult in _REMOVED:
        return CardRemovedError(text)
    if hresult in _RESET:
        return CardResetError(text)
    if hresult in _NO_READER:
        return NoReaderError(text)
    if hresult == scard.SCARD_E_SHARING_VIOLATION:
        return CardInUseError(text)
    return TransportError(text)


def _check(hresult: int, action: str) -> None:
    if hresult != scard.SCARD_S_SUCCESS:
        raise pcsc_error(hresult, action)


class PcscContext:
    """An established PC/SC context (one per thread of use)."""

    def __init__(self) -> None:
        hresult, self.handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check(hresult, "connecting to the PC/SC service")

    def list_readers(self) -> list[str]:
        """Readers pcscd knows now (empty when there are none)."""
        hresult, readers = scard.SCardListReaders(self.handle, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "listing readers")
        return list(readers)

    def connect(self, reader: str) -> PcscConnection:
        """Connect (shared) to the card in ``reader``."""
        return PcscConnection(self, reader)

    def cancel(self) -> None:
        """Interrupt a blocking call on this context (SCardGetStatusChange)."""
        scard.SCardCancel(self.handle)

    def release(self) -> None:
        scard.SCardReleaseContext(self.handle)

    def __enter__(self) -> PcscContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PcscConnection:
    """One shared connection to the card in a reader; implements ``CardConnection``."""

    def __init__(self, context: PcscContext, reader: str) -> None:
        self.reader = reader
        self._context = context
        hresult, self._card, self._protocol = scard.SCardConnect(
            context.handle,
            reader,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        if hresult in (scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_REMOVED_CARD):
            raise NoCardError(f"no card in {reader}")
        _check(hresult, f"connecting to the card in {reader}")
        self._pci = (
            scard.SCARD_PCI_T0 if self._protocol == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        )
        self._closed = False
        self._reset_by_us = False

    def _reconnect_after_our_reset(self) -> None:
        # After we reset the card ourselves the handle reports "reset" once: acknowledge it.
        if not self._reset_by_us:
            return
        self._reset_by_us = False
        hresult, self._protocol = scard.SCardReconnect(
            self._card,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            scard.SCARD_LEAVE_CARD,
        )
        _check(hresult, "reconnecting to the card")

    @property
    def atr(self) -> bytes:
        hresult, _reader, _state, _protocol, atr = scard.SCardStatus(self._card)
        _check(hresult, "reading the card status")
        return bytes(atr)

    def card_events(self) -> int:
        """pcsc-lite's count of insertions and removals in this reader so far.

        It changes whenever a card comes or goes, and not when a card is reset: the same value
        before and inside a transaction means the same card, never swapped in between.
        """
        hresult, states = scard.SCardGetStatusChange(
            self._context.handle, 0, [(self.reader, scard.SCARD_STATE_UNAWARE)]
        )
        _check(hresult, "reading the reader's state")
        return int(states[0][1]) >> 16

    def transmit(self, apdu: bytes) -> bytes:
        self._reconnect_after_our_reset()
        hresult, response = scard.SCardTransmit(self._card, self._pci, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS:
            error = pcsc_error(hresult, "talking to the card")
            if type(error) is TransportError:
                # A failed transaction is often a card that left mid-command.
                self._explain_missing_answer(error)
            raise error
        if len(response) < 2:
            self._explain_missing_answer(TransportError("the reader returned no answer"))
        return bytes(response)

    def _explain_missing_answer(self, error: TransportError) -> None:
        """Some drivers (vpcd among them) fail a command or answer nothing when the card
        vanished mid-command; pcscd notices the removal a moment later. Raises
        CardRemovedError when it does, else ``error``."""
        for _ in range(STATUS_POLLS):
            hresult, _reader, state, _protocol, _atr = scard.SCardStatus(self._card)
            if hresult in _REMOVED:
                break
            _check(hresult, "talking to the card")
            if state & _PCSC_ABSENT or not state & _PCSC_PRESENT:
                break
            time.sleep(STATUS_POLL_INTERVAL)
        else:
            raise error
        raise CardRemovedError("the card was removed while it was being used") from error

    @contextmanager
    def transaction(self, reset_after: bool = False) -> Iterator[PcscConnection]:
        """Exclusive use of the card; ``reset_after`` drops any verified PIN when it ends."""
        self._reconnect_after_our_reset()
        _check(scard.SCardBeginTransaction(self._card), "starting a card transaction")
        disposition = scard.SCARD_RESET_CARD if reset_after else scard.SCARD_LEAVE_CARD
        try:
            yield self
        finally:
            # Ending fails harmlessly when the card is already gone.
            if scard.SCardEndTransaction(self._card, disposition) == scard.SCARD_S_SUCCESS:
                self._reset_by_us = reset_after

    def close(self, reset: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        scard.SCardDisconnect(self._card, disposition)

    def __enter__(self) -> PcscConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
