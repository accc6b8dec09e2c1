"""Raw baselines: the least a PC/SC program must do, through mncd's card layer and pyscard.

No daemon, no D-Bus, no cache, no verification of the result: one connection, one transaction,
the minimal APDU sequence, and a reset at the end (as any careful program does, so no verified
PIN stays on a shared card).
"""

from __future__ import annotations

import threading
import time

from smartcard import scard

from mncd.card.apdu import SW, CardProtocol
from mncd.card.digestinfo import digest, digest_info
from mncd.card.jpki import (
    AUTH_KEY,
    JPKI_AID,
    SIGN_KEY,
    TOKEN_INFO_FID,
    Certificate,
    JpkiSession,
    KeySlot,
    der_length,
    read_binary,
    select_df,
    select_ef,
    verify,
)
from mncd.card.manufacture import MANUFACTURE_AID, RECORD, SFI, read_record
from mncd.card.pcsc import PcscContext

PINS = {AUTH_KEY.name: "1234", SIGN_KEY.name: "ABC123"}


def signature(
    context: PcscContext, reader: str, key: KeySlot, data: bytes, read_certificate: bool = False
) -> bytes:
    """SELECT AP, SELECT PIN EF, the live counter (an empty VERIFY), VERIFY, SELECT key EF, SIGN:
    the fewest APDUs of a signature that never spends a try blindly (see the PIN gate).

    With ``read_certificate``, the signing certificate is read after VERIFY (it needs the
    password), in as few READ BINARYs as possible.
    """
    info = digest_info("sha256", digest("sha256", data))
    with context.connect(reader) as conn, conn.transaction(reset_after=True):
        session = JpkiSession(conn)
        session.pin_tries_left(key)
        session.verify_pin(key, PINS[key.name])
        if read_certificate:
            _read_certificate(session.protocol, Certificate.SIGN.fid)
        return session.sign(key, info)


def _read_certificate(protocol: CardProtocol, fid: int) -> bytes:
    """A certificate in as few READ BINARYs as possible: 256 bytes first, then the rest."""
    protocol.send(select_ef(fid))
    data = protocol.send(read_binary(0, 256))
    total = der_length(data[:4])
    while len(data) < total:
        data += protocol.send(read_binary(len(data), min(256, total - len(data))))
    return data[:total]


def status_read(context: PcscContext, reader: str) -> dict[str, object]:
    """What mncd reads on insertion (manufacture number, token, three public certificates,
    tries), minimally."""
    with context.connect(reader) as conn, conn.transaction():
        protocol = CardProtocol(conn)
        protocol.send(select_df(MANUFACTURE_AID))
        protocol.send(read_record(RECORD, SFI))
        protocol.send(select_df(JPKI_AID))
        protocol.send(select_ef(TOKEN_INFO_FID))
        token = protocol.send(read_binary(0, 32))
        certificates = {
            which.name: _read_certificate(protocol, which.fid)
            for which in (Certificate.AUTH, Certificate.AUTH_CA, Certificate.SIGN_CA)
        }
        protocol.send(select_ef(Certificate.SIGN.fid))  # present? (6A82 would raise)
        tries = {}
        for key in (AUTH_KEY, SIGN_KEY):
            protocol.send(select_ef(key.pin_fid))
            _, sw = protocol.exchange(verify(b""))
            tries[key.name] = sw & 0x0F if sw >> 4 == 0x63C else (3 if sw == SW.OK else 0)
        return {"token": token, "certificates": certificates, "tries": tries}


class PresenceWaiter:
    """A thread blocked in SCardGetStatusChange that notes when pcscd reports a change.

    Started before a card is inserted or removed, it records the moment pcscd tells a plain
    PC/SC client — the baseline of the daemon's insertion signal.
    """

    def __init__(self, reader: str, present: bool, timeout: float = 15.0) -> None:
        self.reader = reader
        self.present = present
        self.timeout = timeout
        self.at: float | None = None
        hresult, self._context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            raise RuntimeError(scard.SCardGetErrorMessage(hresult))
        # Learn the current state first, so the wait below is for the next change.
        hresult, states = scard.SCardGetStatusChange(
            self._context, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        self._state = states[0][1] & ~scard.SCARD_STATE_CHANGED if hresult == 0 else 0
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def _has_card(self, state: int) -> bool:
        return bool(state & scard.SCARD_STATE_PRESENT) and not state & scard.SCARD_STATE_MUTE

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        state = self._state
        try:
            while time.monotonic() < deadline and self._has_card(state) != self.present:
                hresult, states = scard.SCardGetStatusChange(
                    self._context, 1000, [(self.reader, state)]
                )
                if hresult == scard.SCARD_S_SUCCESS:
                    state = states[0][1] & ~scard.SCARD_STATE_CHANGED
            if self._has_card(state) == self.present:
                self.at = time.perf_counter()
        finally:
            scard.SCardReleaseContext(self._context)

    def wait(self) -> float:
        """perf_counter() time of pcscd's report."""
        self._thread.join(self.timeout + 2)
        if self.at is None:
            raise TimeoutError(f"pcscd did not report the change in {self.reader}")
        return self.at
