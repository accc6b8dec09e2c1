"""The JPKI application (公的個人認証AP) of the My Number Card.

:class:`JpkiSession` speaks to one card over any :class:`~mncd.card.apdu.CardConnection`. It selects
the application once per card session: a real card forgets every verified PIN when the AP is
selected again, so VERIFY and the operation that needs it must run in the same session.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import ClassVar, NamedTuple

from .apdu import SW, Apdu, CardConnection, CardProtocol, status_error
from .errors import (
    ApduError,
    FileMissingError,
    InvalidResponseError,
    KeyUnusableError,
    NotJpkiCardError,
    PinBlockedError,
    PinChangeRefusedError,
    PinChangeUnsupportedError,
    PinIncorrectError,
    SecurityStatusError,
)
from .pin import AUTH_PIN, SIGN_PASSWORD, PinPolicy, wipe

JPKI_AID = bytes.fromhex("D392F000260100000001")

#: Largest certificate the layer accepts; real ones are under 2 KiB.
MAX_CERTIFICATE_SIZE = 8192
#: Bytes per READ BINARY (Le 00 = 256 on a short APDU).
READ_CHUNK = 256
#: Token info EF: the PKCS#11 token label is the first 32 bytes.
TOKEN_LABEL_SIZE = 32


class Certificate(Enum):
    """Certificate EFs of the JPKI AP."""

    AUTH = 0x000A  #: 利用者証明用電子証明書
    AUTH_CA = 0x000B
    SIGN = 0x0001  #: 署名用電子証明書 (needs the signing password)
    SIGN_CA = 0x0002

    @property
    def fid(self) -> int:
        return self.value


class KeySlot(NamedTuple):
    """A private key on the card and the PIN that guards it."""

    name: str
    key_fid: int
    pin_fid: int
    pin: PinPolicy
    certificate: Certificate


AUTH_KEY = KeySlot("auth", 0x0017, 0x0018, AUTH_PIN, Certificate.AUTH)
SIGN_KEY = KeySlot("sign", 0x001A, 0x001B, SIGN_PASSWORD, Certificate.SIGN)
TOKEN_INFO_FID = 0x0006


class TokenKind(Enum):
    """What kind of JPKI token the token-info label says this is."""

    CARD = "card"  #: JPKIAPICCTOKEN2, a My Number Card
    ANDROID = "android"  #: JPKIAPGPSETOKEN, an Android phone
    IPHONE = "iphone"  #: JPKIAPIOSTOKEN, an iPhone
    JUKI = "juki"  #: JPKIAPICCTOKEN, the old Juki card
    UNKNOWN = "unknown"


_TOKEN_LABELS = {
    "JPKIAPICCTOKEN2": TokenKind.CARD,
    "JPKIAPGPSETOKEN": TokenKind.ANDROID,
    "JPKIAPIOSTOKEN": TokenKind.IPHONE,
    "JPKIAPICCTOKEN": TokenKind.JUKI,
}


class TokenInfo(NamedTuple):
    """The token-info EF's label and what it means."""

    label: str
    kind: TokenKind

    @classmethod
    def parse(cls, data: bytes) -> TokenInfo:
        label = data[:TOKEN_LABEL_SIZE].decode("ascii", errors="replace").rstrip(" \x00")
        return cls(label, _TOKEN_LABELS.get(label, TokenKind.UNKNOWN))


def select_df(aid: bytes) -> Apdu:
    """SELECT by DF name, no response data wanted."""
    return Apdu(0x00, 0xA4, 0x04, 0x0C, aid)


def select_ef(fid: int) -> Apdu:
    """SELECT an EF by file identifier, no response data wanted."""
    return Apdu(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))


def read_binary(offset: int, length: int) -> Apdu:
    """READ BINARY at ``offset`` (15 bits) for ``length`` bytes (1..256)."""
    if not 0 <= offset <= 0x7FFF:
        raise ValueError("offset out of range")
    return Apdu(0x00, 0xB0, offset >> 8, offset & 0xFF, le=length)


def verify(pin: bytes) -> Apdu:
    """VERIFY, a case-3 APDU (a real card answers 6700 to a trailing Le); no PIN: tries left."""
    return Apdu(0x00, 0x20, 0x00, 0x80, bytes(pin))


def change_reference_data(new_pin: bytes) -> Apdu:
    """CHANGE REFERENCE DATA with the new PIN only (P1 01: the current PIN was verified just
    before, in the same card session), a case-3 APDU like VERIFY.

    This is the form peers send (jpki/myna); no public source confirms it against real cards.
    """
    return Apdu(0x00, 0x24, 0x01, 0x80, bytes(new_pin))


def compute_signature(data: bytes) -> Apdu:
    """COMPUTE DIGITAL SIGNATURE over ``data`` (a DER DigestInfo for RSA keys), Le 256."""
    return Apdu(0x80, 0x2A, 0x00, 0x80, data, le=256)


def der_length(header: bytes) -> int:
    """Total length of a DER SEQUENCE (tag + length + content) from its first bytes."""
    if len(header) < 2 or header[0] != 0x30:
        raise InvalidResponseError("not a DER SEQUENCE")
    first = header[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 3 or len(header) < 2 + count:
        raise InvalidResponseError("unsupported DER length")
    return 2 + count + int.from_bytes(header[2 : 2 + count], "big")


class ApplicationSession:
    """Commands of one card application (AP) in one card session: the AP is selected once
    (selecting it again logs the card out) and an EF only when another one is selected."""

    AID: ClassVar[bytes]
    NAME: ClassVar[str]  #: for errors: "JPKI", "card-info"

    def __init__(self, connection: CardConnection) -> None:
        self.protocol = CardProtocol(connection)
        self._selected = False
        self._current_ef: int | None = None

    def select_application(self) -> None:
        """Select the AP unless this session already did."""
        if self._selected:
            return
        _, sw = self.protocol.exchange(select_df(self.AID))
        if sw != SW.OK:
            raise NotJpkiCardError(f"no {self.NAME} application on this card (status {sw:04X})")
        self._selected = True
        self._current_ef = None

    def _select_ef(self, fid: int) -> None:
        self.select_application()
        if self._current_ef == fid:
            return
        self._current_ef = None
        self.protocol.send(select_ef(fid))
        self._current_ef = fid

    # -- a PIN of this AP: its EF and its policy -------------------------------------------

    def _tries_left(self, fid: int, policy: PinPolicy) -> int:
        self._select_ef(fid)
        _, sw = self.protocol.exchange(verify(b""))
        return tries_left_from_status(sw, policy)

    def _pin_command(
        self, fid: int, policy: PinPolicy, pin: str | bytes | bytearray,
        command: Callable[[bytes], Apdu],
    ) -> int:  # fmt: skip
        """``command`` carrying ``pin`` to the PIN EF ``fid``, its status word. The PIN's shape
        is checked first (a malformed one is never sent) and its bytes wiped afterwards."""
        encoded = policy.check(pin)
        try:
            self._select_ef(fid)
            _, sw = self.protocol.exchange(command(encoded))
        finally:
            wipe(encoded)
        return sw

    def _verify(self, fid: int, policy: PinPolicy, pin: str | bytes | bytearray) -> None:
        raise_for_verify_status(self._pin_command(fid, policy, pin, verify), policy)

    def _change(self, fid: int, policy: PinPolicy, new_pin: str | bytes | bytearray) -> None:
        raise_for_change_status(self._pin_command(fid, policy, new_pin, change_reference_data))


class JpkiSession(ApplicationSession):
    """Commands of the JPKI AP on one card session."""

    AID = JPKI_AID
    NAME = "JPKI"

    def has_file(self, fid: int) -> bool:
        """Whether the EF exists (selecting needs no PIN, even for guarded files)."""
        try:
            self._select_ef(fid)
        except FileMissingError:
            return False
        return True

    # -- reading ---------------------------------------------------------------------------

    def _read(self, offset: int, length: int) -> bytes:
        data = self.protocol.send(read_binary(offset, length))
        if not data:
            raise InvalidResponseError("card returned no data for READ BINARY")
        if len(data) > length:
            raise InvalidResponseError("card returned more data than asked for")
        return data

    def _read_exact(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            out += self._read(offset + len(out), min(READ_CHUNK, length - len(out)))
        return bytes(out)

    def read_certificate(self, which: Certificate) -> bytes:
        """The DER certificate in ``which``, without the filler that follows it in the EF."""
        self._select_ef(which.fid)
        # One full chunk first: it holds the DER header, so the length costs no extra APDU.
        head = self._read(0, READ_CHUNK)
        if len(head) < 4:
            head += self._read_exact(len(head), 4 - len(head))
        total = der_length(head)
        if total > MAX_CERTIFICATE_SIZE:
            raise InvalidResponseError("certificate larger than any JPKI certificate")
        if total <= len(head):
            return head[:total]
        return head + self._read_exact(len(head), total - len(head))

    def read_token_info(self) -> TokenInfo:
        """The token-info label (which kind of JPKI token this is)."""
        self._select_ef(TOKEN_INFO_FID)
        return TokenInfo.parse(self._read_exact(0, TOKEN_LABEL_SIZE))

    # -- PINs ------------------------------------------------------------------------------

    def pin_tries_left(self, key: KeySlot) -> int:
        """Tries left on ``key``'s PIN, asked without spending one."""
        return self._tries_left(key.pin_fid, key.pin)

    def verify_pin(self, key: KeySlot, pin: str | bytes | bytearray) -> None:
        """Verify ``key``'s PIN. Its format is checked first; a malformed PIN is never sent."""
        self._verify(key.pin_fid, key.pin, pin)

    def change_pin(self, key: KeySlot, new_pin: str | bytes | bytearray) -> None:
        """Replace ``key``'s PIN by ``new_pin``; the current PIN must have been verified in this
        session. The new PIN's shape is checked first: a malformed one is never sent."""
        self._change(key.pin_fid, key.pin, new_pin)

    # -- keys ------------------------------------------------------------------------------

    def sign(self, key: KeySlot, data: bytes) -> bytes:
        """Sign ``data`` (a DER DigestInfo for RSA) with ``key``; its PIN must be verified."""
        if not data:
            raise ValueError("nothing to sign")
        self._select_ef(key.key_fid)
        signature, sw = self.protocol.exchange(compute_signature(data))
        if sw in (SW.REFERENCE_DATA_NOT_USABLE, SW.CONDITIONS_NOT_SATISFIED):
            raise KeyUnusableError(sw, "the card refuses to use this key")
        if sw != SW.OK:
            raise status_error(sw)
        if not signature:
            raise InvalidResponseError("card returned an empty signature")
        return signature


def tries_left_from_status(sw: int, policy: PinPolicy) -> int:
    """Tries left from the answer to an empty VERIFY."""
    if sw == SW.OK:
        return policy.max_tries  # verified in this session: the counter is full
    if sw >> 4 == 0x63C:
        return sw & 0x0F
    if sw in (SW.AUTH_METHOD_BLOCKED, SW.REFERENCE_DATA_NOT_USABLE):
        return 0
    raise status_error(sw)


#: Answers to CHANGE REFERENCE DATA meaning the card does not take the command in this form.
_CHANGE_UNSUPPORTED = frozenset(
    {SW.INS_NOT_SUPPORTED, SW.CLA_NOT_SUPPORTED, SW.FUNCTION_NOT_SUPPORTED, SW.INCORRECT_P1P2,
     SW.WRONG_P1P2}
)  # fmt: skip


def raise_for_change_status(sw: int) -> None:
    """Map the status word of CHANGE REFERENCE DATA to success or a typed error; any error
    means the card kept the current PIN."""
    if sw == SW.OK:
        return
    if sw == SW.SECURITY_STATUS_NOT_SATISFIED:
        raise SecurityStatusError(sw, "the card wants the current PIN verified first")
    if sw in _CHANGE_UNSUPPORTED:
        raise PinChangeUnsupportedError(
            sw, f"the card does not take the PIN change command (status {sw:04X})"
        )
    raise PinChangeRefusedError(sw, f"the card refused the PIN change (status {sw:04X})")


def raise_for_verify_status(sw: int, policy: PinPolicy) -> None:
    """Map the status word of a VERIFY with a PIN to success or a typed PIN error."""
    if sw == SW.OK:
        return
    if sw == 0x63C0 or sw in (SW.AUTH_METHOD_BLOCKED, SW.REFERENCE_DATA_NOT_USABLE):
        raise PinBlockedError(policy.label_en)
    if sw >> 4 == 0x63C:
        raise PinIncorrectError(sw & 0x0F, policy.label_en)
    if sw == SW.WRONG_LENGTH:
        raise ApduError(sw, "card refused the VERIFY command's length")
    raise status_error(sw)
