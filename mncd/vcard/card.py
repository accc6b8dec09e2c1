"""The virtual My Number Card: answers APDUs as a real card does.

Models the JPKI AP, the card-info AP (basic four information; the individual-number EF exists
and is guarded, so tests can prove it is never touched) and the application whose record 1
holds the card's manufacture number (READ RECORD by short file identifier 1, or of the current
EF). Security state lives for one card session:
a reset, a power cycle or (by default) a re-SELECT of an AP forgets every verified PIN, while PIN
counters persist as long as the card exists.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ..card.cardinfo import BASIC_INFO_FID, CARD_INFO_AID, INDIVIDUAL_NUMBER_FID
from ..card.cardinfo import PIN_FID as CARD_INFO_PIN_FID
from ..card.jpki import JPKI_AID, TOKEN_INFO_FID
from ..card.manufacture import MANUFACTURE_AID
from .pki import CardPki, PrivateKey
from .profile import TOKEN_LABELS, CardProfile, contactless_atr, resolve_atr

#: Personal data on the card (the card-info AP) that the office can change on the same card.
CARD_DATA = ("name", "address", "birth_date", "sex")

OK = b"\x90\x00"
CERTIFICATE_EF_SIZE = 0x800  # certificate EFs are larger than the certificates in them
FILLER = 0xFF
WRONG_LE_CHUNK = 0xF0
#: Longest PIN a PIN EF takes (the signing password's 16 characters).
MAX_PIN_LENGTH = 16
#: Ways a hostile card mangles an answer (profile ``hostile``).
HOSTILE_KINDS = ("truncate", "pad", "garbage", "der", "status", "61xx", "6cxx", "slow")
#: Status words a hostile card answers out of place.
ODD_STATUS = (
    0x9000, 0x6A82, 0x6982, 0x6983, 0x6984, 0x6985, 0x6700, 0x6B00, 0x6F00, 0x63C0, 0x63C1,
    0x63CF, 0x6283, 0x6581, 0x9001, 0x0000, 0xFFFF, 0x6100, 0x6C00, 0x6CFF,
)  # fmt: skip


def sw(value: int) -> bytes:
    return value.to_bytes(2, "big")


@dataclass
class PinFile:
    value: bytes
    tries_left: int
    max_tries: int


@dataclass
class BinaryFile:
    data: bytes
    read_pin: int | None = None  # FID of the PIN that must be verified first


@dataclass
class RecordFile:
    """A record EF, addressed by its short file identifier (READ RECORD)."""

    sfi: int
    records: list[bytes]


@dataclass
class KeyFile:
    key: PrivateKey
    pin: int  # FID of the PIN that guards the key


@dataclass
class Application:
    aid: bytes
    files: dict[int, PinFile | BinaryFile | KeyFile | RecordFile] = field(default_factory=dict)


@dataclass
class LogEntry:
    """One APDU the card answered; the data of VERIFY and CHANGE REFERENCE DATA is masked so
    logs never hold a PIN."""

    command: str
    response: str
    time: float

    @property
    def header(self) -> str:
        return self.command[:8]


#: Commands whose data is a PIN: VERIFY and CHANGE REFERENCE DATA.
_PIN_INS = (0x20, 0x24)


def _mask_pins(apdu: bytes) -> str:
    text = apdu.hex().upper()
    if len(apdu) > 5 and apdu[1] in _PIN_INS:
        lc = min(apdu[4], len(apdu) - 5)
        return text[:10] + "**" * lc + text[10 + 2 * lc :]
    return text


def basic_info_template(name: str, address: str, birth_date: str, sex: str) -> bytes:
    """The FF20 template of the basic-information EF."""

    def tlv(tag: int, value: bytes) -> bytes:
        return tag.to_bytes(2, "big") + _ber_length(len(value)) + value

    fields = [
        tlv(0xDF22, name.encode("utf-8")),
        tlv(0xDF23, address.encode("utf-8")),
        tlv(0xDF24, birth_date.encode("ascii")),
        tlv(0xDF25, sex.encode("ascii")),
    ]
    # DF21 holds the offset of each field from the start of the file, as on real cards.
    header_size = 2 + 1 + 8  # DF21, its length, four 2-byte offsets
    body_size = header_size + sum(map(len, fields))
    offset = 2 + len(_ber_length(body_size)) + header_size
    offsets = b""
    for item in fields:
        offsets += offset.to_bytes(2, "big")
        offset += len(item)
    return tlv(0xFF20, tlv(0xDF21, offsets) + b"".join(fields))


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    return bytes((0x82, n >> 8, n & 0xFF))


def manufacture_record(number: str) -> bytes:
    """Record 1 of the manufacture-number application: a BER-wrapped text whose characters
    2–15 are the number (as jpki/myna reads it)."""
    value = ("00" + number).encode("ascii")
    return bytes((0x04, len(value))) + value


def raw_rsa_pkcs1_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """PKCS#1 v1.5 type-1 padding of ``data`` as given (the card does not add a DigestInfo)."""
    numbers = key.private_numbers()
    k = (key.key_size + 7) // 8
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    m = int.from_bytes(block, "big")
    # CRT: two half-size exponentiations.
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (s1 - s2)) % numbers.p
    return (s2 + h * numbers.q).to_bytes(k, "big")


class VirtualCard:
    """One virtual My Number Card built from a :class:`CardProfile` and its PKI."""

    def __init__(self, profile: CardProfile, pki: CardPki) -> None:
        if not profile.manufacture_number:  # one physical card: one number for its lifetime
            profile = dataclasses.replace(
                profile, manufacture_number=f"{secrets.randbelow(10**13):013d}"
            )
        self.profile = profile
        self.pki = pki
        self.log: list[LogEntry] = []
        self.on_log: Callable[[LogEntry], None] | None = None
        self._lock = threading.Lock()
        self._atr = bytes.fromhex(resolve_atr(profile.atr))
        self.apps = self._build_files(profile, pki)
        self._hostile = random.Random(profile.hostile) if profile.hostile else None
        self._endless = 0  # GET RESPONSEs a hostile card still answers with yet another 61xx
        self._reset_state()

    # -- construction ----------------------------------------------------------------------

    @staticmethod
    def _build_files(profile: CardProfile, pki: CardPki) -> dict[bytes, Application]:
        def cert_file(der: bytes, read_pin: int | None = None) -> BinaryFile:
            data = der
            if profile.filler:
                size = max(CERTIFICATE_EF_SIZE, -(-len(der) // 0x100) * 0x100)
                data = der + bytes([FILLER]) * (size - len(der))
            return BinaryFile(data, read_pin)

        token = TOKEN_LABELS[profile.token].encode("ascii").ljust(32, b" ")
        jpki = Application(JPKI_AID)
        jpki.files[TOKEN_INFO_FID] = BinaryFile(token + bytes(160 - len(token)))
        jpki.files[0x0018] = PinFile(profile.auth_pin.encode(), profile.auth_tries_left, 3)
        jpki.files[0x001B] = PinFile(profile.sign_password.encode(), profile.sign_tries_left, 5)
        if profile.auth_certificate:
            jpki.files[0x000A] = cert_file(pki.auth_certificate)
            jpki.files[0x0017] = KeyFile(pki.auth_key, 0x0018)
        jpki.files[0x000B] = cert_file(pki.auth_ca_certificate)
        if profile.sign_certificate:
            jpki.files[0x0001] = cert_file(pki.sign_certificate, read_pin=0x001B)
            jpki.files[0x001A] = KeyFile(pki.sign_key, 0x001B)
        jpki.files[0x0002] = cert_file(pki.sign_ca_certificate)

        info = Application(CARD_INFO_AID)
        info.files[CARD_INFO_PIN_FID] = PinFile(
            profile.card_info_pin.encode(), profile.card_info_tries_left, 3
        )
        birth = profile.birth_date.replace("-", "")
        info.files[BASIC_INFO_FID] = BinaryFile(
            basic_info_template(profile.name, profile.address, birth, profile.sex),
            read_pin=CARD_INFO_PIN_FID,
        )
        # The individual number: present like on a real card, never to be read by mncd.
        info.files[INDIVIDUAL_NUMBER_FID] = BinaryFile(
            b"\xff\x01" + bytes(16), read_pin=CARD_INFO_PIN_FID
        )
        apps = {CARD_INFO_AID: info}
        if profile.manufacture_record:
            apps[MANUFACTURE_AID] = Application(
                MANUFACTURE_AID,
                {0x0001: RecordFile(1, [manufacture_record(profile.manufacture_number)])},
            )
        if profile.jpki:
            apps[JPKI_AID] = jpki
        return apps

    def replace_pki(self, pki: CardPki) -> None:
        """New keys/certificates on the same card (PIN counters and state are kept)."""
        with self._lock:
            self.pki = pki
            fresh = self._build_files(self.profile, pki)
            for aid, app in fresh.items():
                if aid in self.apps:
                    for fid, ef in app.files.items():
                        if not isinstance(ef, PinFile):
                            self.apps[aid].files[fid] = ef

    def update_card_data(self, overrides: list[str]) -> None:
        """New name, address, birth date or sex in the card-info AP, as the municipal office
        writes them after a move; the certificates stay as issued (so they no longer match)."""
        with self._lock:
            old = self.profile
            keep = {
                f"cert_{key}": getattr(old, f"cert_{key}") or getattr(old, key) for key in CARD_DATA
            }
            for item in overrides:
                if item.partition("=")[0].strip() not in CARD_DATA:
                    raise ValueError(f"only {', '.join(CARD_DATA)} change on the same card")
            self.profile = dataclasses.replace(old.with_overrides(overrides), **keep)
            fresh = self._build_files(self.profile, self.pki)
            self.apps[CARD_INFO_AID].files[BASIC_INFO_FID] = fresh[CARD_INFO_AID].files[
                BASIC_INFO_FID
            ]

    # -- card life cycle -------------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self._atr

    def insert(self) -> None:
        """The card enters a reader (or a contactless field): a new ATR when it varies per tap."""
        with self._lock:
            if self.profile.random_atr:
                self._atr = random_contactless_atr()
            self._reset_state()

    def reset(self) -> None:
        with self._lock:
            self._reset_state()

    def _reset_state(self) -> None:
        self.app: Application | None = None
        self.ef: int | None = None
        self.verified: set[tuple[bytes, int]] = set()
        self.pending: bytes = b""

    # -- APDU processing -------------------------------------------------------------------

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU (data + SW)."""
        if self.profile.apdu_delay_ms:
            time.sleep(self.profile.apdu_delay_ms / 1000)
        delay = 0.0
        with self._lock:
            try:
                response = self._dispatch(apdu)
            except _Status as status:
                response = status.response
            if self._hostile is not None:
                response, delay = self._mangle(apdu, response)
            entry = LogEntry(_mask_pins(apdu), response.hex().upper(), time.time())
            self.log.append(entry)
        if delay:
            time.sleep(delay)
        if self.on_log is not None:
            self.on_log(entry)
        return response

    def _mangle(self, apdu: bytes, response: bytes) -> tuple[bytes, float]:
        """A hostile card's answer instead of ``response``, and how long to stall before it."""
        rng = self._hostile
        assert rng is not None
        if self._endless and apdu[1:2] == b"\xc0":
            self._endless -= 1
            return rng.randbytes(rng.randint(0, 16)) + sw(0x6100 | rng.randint(0, 255)), 0.0
        self._endless = 0
        if rng.random() >= self.profile.hostile_rate:
            return response, 0.0
        data, status = response[:-2], response[-2:]
        kind = rng.choice(HOSTILE_KINDS)
        if kind == "truncate":  # includes no answer at all and a lone status byte
            return response[: rng.randrange(len(response))], 0.0
        if kind == "pad":  # more data than asked for
            return data + rng.randbytes(rng.randint(1, 300)) + status, 0.0
        if kind == "garbage":
            return rng.randbytes(len(data) or rng.randint(1, 64)) + status, 0.0
        if kind == "der":  # a plausible DER header over garbage: a broken certificate
            body = rng.randbytes(max(len(data), 8) - 4)
            return b"\x30\x82" + rng.randbytes(2) + body + OK, 0.0
        if kind == "status":
            return data + sw(rng.choice(ODD_STATUS)), 0.0
        if kind == "61xx":  # announces more data, forever
            self._endless = 200
            return sw(0x6100 | rng.randint(0, 255)), 0.0
        if kind == "6cxx":
            return sw(0x6C00 | rng.randint(0, 255)), 0.0
        return response, rng.uniform(0.05, 0.4)  # slow

    def _dispatch(self, apdu: bytes) -> bytes:
        if len(apdu) < 4:
            raise _Status(0x6700)
        cla, ins, p1, p2 = apdu[:4]
        data, le, has_le = _parse_body(apdu)
        if ins == 0xC0 and cla == 0x00:
            return self._get_response(le)
        self.pending = b""
        if cla == 0x00 and ins == 0xA4:
            return self._select(p1, p2, data)
        if cla == 0x00 and ins == 0xB0:
            return self._read_binary(p1, p2, le)
        if cla == 0x00 and ins == 0xB2:
            return self._read_record(p1, p2, le)
        if cla == 0x00 and ins == 0x20:
            return self._verify(p1, p2, data, has_le)
        if cla == 0x00 and ins == 0x24:
            return self._change_reference_data(p1, p2, data, has_le)
        if cla == 0x80 and ins == 0x2A:
            return self._sign(p1, p2, data)
        if cla not in (0x00, 0x80):
            raise _Status(0x6E00)
        raise _Status(0x6D00)

    def _select(self, p1: int, p2: int, data: bytes) -> bytes:
        if p1 == 0x04:
            app = self.apps.get(data)
            if app is None:
                raise _Status(0x6A82)
            if self.profile.reselect_logout or app is not self.app:
                self.verified.clear()
            self.app, self.ef = app, None
            return OK
        if p1 == 0x02 and len(data) == 2:
            fid = int.from_bytes(data, "big")
            if self.app is None or fid not in self.app.files:
                raise _Status(0x6A82)
            self.ef = fid
            return OK
        raise _Status(0x6A86)

    def _current(self) -> PinFile | BinaryFile | KeyFile | RecordFile:
        if self.app is None or self.ef is None:
            raise _Status(0x6986)  # command not allowed: no current EF
        return self.app.files[self.ef]

    def _read_binary(self, p1: int, p2: int, le: int) -> bytes:
        if p1 & 0x80:
            raise _Status(0x6A81)  # short-EF addressing not offered
        ef = self._current()
        if not isinstance(ef, BinaryFile):
            raise _Status(0x6981)
        if ef.read_pin is not None and (self.app.aid, ef.read_pin) not in self.verified:
            raise _Status(0x6982)
        offset = (p1 << 8) | p2
        if offset >= len(ef.data):
            raise _Status(0x6B00)
        if self.profile.wrong_le_6cxx:
            # This card serves at most WRONG_LE_CHUNK bytes per READ BINARY and tells the
            # reader the right Le with 6Cxx whenever Le asks for more than it will give.
            available = min(len(ef.data) - offset, WRONG_LE_CHUNK)
            if le > available:
                raise _Status(0x6C00 | available)
        return ef.data[offset : offset + le] + OK

    def _read_record(self, p1: int, p2: int, le: int) -> bytes:
        """READ RECORD ``p1`` of the EF with short identifier ``p2 >> 3`` (0: the current EF)."""
        if p2 & 0x07 != 0x04 or p1 == 0:
            raise _Status(0x6A86)
        sfi = p2 >> 3
        if self.app is None:
            raise _Status(0x6986)
        if sfi:
            ef = next(
                (f for f in self.app.files.values() if isinstance(f, RecordFile) and f.sfi == sfi),
                None,
            )
        else:
            current = self.app.files.get(self.ef) if self.ef is not None else None
            # Right after selecting the application, its only record EF is the current one.
            records = [f for f in self.app.files.values() if isinstance(f, RecordFile)]
            ef = current if current is not None else (records[0] if len(records) == 1 else None)
        if not isinstance(ef, RecordFile):
            raise _Status(0x6A82)
        if p1 > len(ef.records):
            raise _Status(0x6A83)
        return ef.records[p1 - 1][:le] + OK

    def _verify(self, p1: int, p2: int, data: bytes, has_le: bool) -> bytes:
        if has_le and self.profile.verify_le_strict:
            raise _Status(0x6700)
        if (p1, p2) != (0x00, 0x80):
            raise _Status(0x6A86)
        ef = self._current()
        if not isinstance(ef, PinFile):
            raise _Status(0x6981)
        key = (self.app.aid, self.ef)
        if not data:
            # Tries left, even right after a successful VERIFY, and 63C0 once blocked
            # (OpenSC gives up on the whole token for any other answer here).
            raise _Status(0x63C0 | ef.tries_left)
        if ef.tries_left == 0:
            raise _Status(int(self.profile.blocked_sw, 16))
        if secrets.compare_digest(data, ef.value):
            ef.tries_left = ef.max_tries
            self.verified.add(key)
            return OK
        ef.tries_left -= 1
        self.verified.discard(key)
        raise _Status(0x63C0 | ef.tries_left)

    def _change_reference_data(self, p1: int, p2: int, data: bytes, has_le: bool) -> bytes:
        """The PIN change peers implement: P1 01 (the new PIN only), right after a VERIFY of
        the current PIN in this card session. Modelled, not confirmed on real cards."""
        if not self.profile.change_pin:
            raise _Status(0x6D00)
        if self.profile.change_pin_refuse:
            raise _Status(int(self.profile.change_pin_refuse, 16))
        if has_le and self.profile.verify_le_strict:
            raise _Status(0x6700)
        if (p1, p2) != (0x01, 0x80):
            raise _Status(0x6A86)
        ef = self._current()
        if not isinstance(ef, PinFile):
            raise _Status(0x6981)
        if (self.app.aid, self.ef) not in self.verified:
            raise _Status(0x6982)
        if not 1 <= len(data) <= MAX_PIN_LENGTH:
            raise _Status(0x6700)
        ef.value = data
        ef.tries_left = ef.max_tries
        return OK

    def _sign(self, p1: int, p2: int, data: bytes) -> bytes:
        ef = self._current()
        if not isinstance(ef, KeyFile):
            raise _Status(0x6981)
        if (self.app.aid, ef.pin) not in self.verified:
            raise _Status(0x6982)
        if (p1, p2) != (0x00, 0x80):
            raise _Status(0x6A86)
        if self.profile.refuse_key == {0x0018: "auth", 0x001B: "sign"}.get(ef.pin):
            raise _Status(0x6984)  # the key can no longer be used
        if isinstance(ef.key, rsa.RSAPrivateKey):
            if not data or len(data) > ef.key.key_size // 8 - 11:
                raise _Status(0x6700)
            signature = raw_rsa_pkcs1_sign(ef.key, data)
        else:
            # Provisional next-generation profile: the host sends the hash, the card
            # returns a DER ECDSA signature.
            if len(data) not in (32, 48, 64):
                raise _Status(0x6700)
            algorithm = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(data)]
            signature = ef.key.sign(data, ec.ECDSA(Prehashed(algorithm)))
        if self.profile.corrupt_signature:
            signature = signature[:-1] + bytes((signature[-1] ^ 0x01,))
        if self.profile.sign_delay_ms:
            time.sleep(self.profile.sign_delay_ms / 1000)
        if self.profile.t0_get_response:
            self.pending = signature
            return sw(0x6100 | (len(signature) & 0xFF))
        return signature + OK

    def _get_response(self, le: int) -> bytes:
        if not self.pending:
            raise _Status(0x6985)
        chunk, self.pending = self.pending[:le], self.pending[le:]
        if self.pending:
            return chunk + sw(0x6100 | (len(self.pending) & 0xFF))
        return chunk + OK

    def reset_pin(self, which: str) -> None:
        """The municipal office resets a PIN (auth, sign, card_info): its counter is full again
        (the same PIN here; the office would set one the holder chooses)."""
        files = {
            "auth": (JPKI_AID, 0x0018),
            "sign": (JPKI_AID, 0x001B),
            "card_info": (CARD_INFO_AID, CARD_INFO_PIN_FID),
        }
        aid, fid = files[which]
        pin = self.apps[aid].files[fid]
        pin.tries_left = pin.max_tries

    # -- inspection for tests --------------------------------------------------------------

    def tries_left(self) -> dict[str, int]:
        jpki = self.apps.get(JPKI_AID)
        info = self.apps[CARD_INFO_AID]
        out = {"card_info": info.files[CARD_INFO_PIN_FID].tries_left}
        if jpki:
            out["auth"] = jpki.files[0x0018].tries_left
            out["sign"] = jpki.files[0x001B].tries_left
        return out


class _Status(Exception):
    def __init__(self, value: int) -> None:
        self.response = sw(value)


def _parse_body(apdu: bytes) -> tuple[bytes, int, bool]:
    """Data, Le (256 for 00) and whether an Le byte was present, for a short APDU."""
    body = apdu[4:]
    if not body:
        return b"", 256, False
    if len(body) == 1:
        return b"", body[0] or 256, True
    lc = body[0]
    if lc == 0 or len(body) not in (1 + lc, 2 + lc):
        raise _Status(0x6700)
    data = body[1 : 1 + lc]
    if len(body) == 2 + lc:
        return data, body[-1] or 256, True
    return data, 256, False


def random_contactless_atr() -> bytes:
    """A contactless ATR whose ATQB application data (the PUPI's neighbour) is random."""
    return contactless_atr(secrets.token_bytes(4) + bytes.fromhex("00000081"))
