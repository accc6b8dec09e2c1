"""What a virtual My Number Card holds and how it behaves: one flat, serializable profile.

Profiles come from a JSON or TOML file, from ``key=value`` overrides on the command line, or from
code. Every field has a default that makes a healthy card.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JST = dt.timezone(dt.timedelta(hours=9), "JST")


def japan_today() -> dt.date:
    """Today's date in Japan, the calendar JPKI validity is counted in."""
    return dt.datetime.now(JST).date()


#: Contact ATRs of real cards (OpenSC's lists); the first is the one OpenSC's JPKI driver matches.
CONTACT_ATRS = {
    "contact-1": "3BE000FF8131FE4514",
    "contact-2": "3BC5FF8131FB458073C6010000",
}


def contactless_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC contactless reader synthesizes (PC/SC part 3): 3B 8n 80 01 … TCK."""
    body = bytes((0x80 | (len(historical) & 0x0F), 0x80, 0x01)) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes((tck,))


#: Type B: ATQB application data (4), protocol info (3), MBLI (1).
CONTACTLESS_ATRS = {
    "contactless-1": contactless_atr(bytes.fromhex("0000000000000081")).hex().upper(),
}

#: Named starting points for a profile (``mncd-vcard --preset NAME``).
PRESETS: dict[str, dict[str, Any]] = {
    "current": {},
    # The planned next-generation card as publicly reported: ECDSA P-384 with SHA-384 and
    # 10-year certificates. Its real AP layout and file IDs are not public yet, so this preset
    # keeps today's layout: it exercises the algorithm and validity, not the real card.
    "next-generation-provisional": {
        "algorithm": "ec-p384",
        "not_before_days": -30,
        "not_after_days": 3650 - 30,
    },
    "under-15": {"sign_certificate": False},
    "contactless": {"atr": "contactless-1", "apdu_delay_ms": 0.0},
}

TOKEN_LABELS = {
    "card": "JPKIAPICCTOKEN2",
    "android": "JPKIAPGPSETOKEN",
    "iphone": "JPKIAPIOSTOKEN",
    "juki": "JPKIAPICCTOKEN",
}


@dataclass
class CardProfile:
    """Contents and behaviour of one virtual card. PINs here are test values, never real ones."""

    # PINs and their counters
    auth_pin: str = "1234"
    sign_password: str = "ABC123"
    card_info_pin: str = "1234"
    auth_tries_left: int = 3
    sign_tries_left: int = 5
    card_info_tries_left: int = 3

    # Personal data printed on the card (券面事項入力補助AP) ...
    name: str = "番号\u3000花子"
    address: str = "東京都千代田区千代田一丁目一番地"
    birth_date: str = "1990-04-01"
    sex: str = "2"
    # ... and in the signing certificate; empty means "same as on the card".
    cert_name: str = ""
    cert_address: str = ""
    cert_birth_date: str = ""
    cert_sex: str = ""

    # Certificates: validity as days from today (negative = in the past) unless dates are given.
    not_before_days: int = -365
    not_after_days: int = 1460
    not_before: str = ""
    not_after: str = ""
    auth_certificate: bool = True
    sign_certificate: bool = True
    #: Changing the generation replaces the card's keys and certificates (a renewed card).
    generation: int = 1
    #: The 13-character manufacture number naming the physical card; empty: a stable value per
    #: card name in the card host (the same name renewed keeps it, another card has another).
    manufacture_number: str = ""
    #: False: the manufacture number cannot be read (an older or foreign card).
    manufacture_record: bool = True

    # Card identity and quirks of real cards
    atr: str = CONTACT_ATRS["contact-1"]
    random_atr: bool = False  #: a new ATR at every insertion (readers that put a PUPI into it)
    token: str = "card"  #: card / android / iphone / juki
    jpki: bool = True  #: False: not a My Number Card (SELECT of the JPKI AP answers 6A82)
    filler: bool = True  #: filler bytes after the DER in certificate EFs
    blocked_sw: str = "6984"  #: answer to VERIFY once blocked: 6983 or 6984
    verify_le_strict: bool = True  #: VERIFY with a trailing Le byte answers 6700
    reselect_logout: bool = True  #: SELECT of the AP (even the same one) ends verification
    t0_get_response: bool = False  #: answer SIGN with 61xx and serve it by GET RESPONSE
    wrong_le_6cxx: bool = False  #: READ BINARY asking more than 240 bytes (or past the end): 6Cxx
    corrupt_signature: bool = False  #: a faulty card: flip a bit in every signature
    refuse_key: str = ""  #: "auth" or "sign": that key answers 6984 (no longer usable)
    #: CHANGE REFERENCE DATA (00 24 01 80 <new PIN>, after VERIFY) as peers implement it;
    #: false: the card does not know the command (6D00). Unverified against real cards.
    change_pin: bool = True
    #: A status word (hex) to answer CHANGE REFERENCE DATA with instead, changing nothing: a card
    #: that wants the command in another form (6A86) or refuses it; empty: do the change.
    change_pin_refuse: str = ""
    apdu_delay_ms: float = 0.0  #: extra time per APDU
    sign_delay_ms: float = 0.0  #: extra time per signature
    #: A hostile card: non-zero seeds a generator that mangles answers (truncated or padded data,
    #: garbage bytes, odd status words, endless 61xx / 6Cxx, slow answers); 0 is an honest card.
    hostile: int = 0
    hostile_rate: float = 0.3  #: share of answers a hostile card mangles
    algorithm: str = "rsa2048"  #: rsa2048, or ec-p384 (next-generation, provisional)

    extra: dict[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------

    def certificate_personal_data(self) -> tuple[str, str, dt.date, str]:
        """Name, address, birth date, sex as written into the signing certificate."""
        return (
            self.cert_name or self.name,
            self.cert_address or self.address,
            dt.date.fromisoformat(self.cert_birth_date or self.birth_date),
            self.cert_sex or self.sex,
        )

    def validity(self, today: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
        """notBefore and notAfter of the end-entity certificates.

        Days count in Japan's calendar: a certificate ends at 23:59:59 JST of its last day, so
        "N days from today" is N days from today's date in Japan, whatever the clock's zone.
        """
        today = today or japan_today()
        start = (
            dt.date.fromisoformat(self.not_before)
            if self.not_before
            else today + dt.timedelta(days=self.not_before_days)
        )
        end = (
            dt.date.fromisoformat(self.not_after)
            if self.not_after
            else today + dt.timedelta(days=self.not_after_days)
        )
        return (
            dt.datetime.combine(start, dt.time(0, 0), JST),
            dt.datetime.combine(end, dt.time(23, 59, 59), JST),
        )

    def pki_key(self) -> str:
        """What identifies the generated keys and certificates (same key → same PKI)."""
        fields = (
            "cert_name", "cert_address", "cert_birth_date", "cert_sex", "name", "address",
            "birth_date", "sex", "not_before_days", "not_after_days", "not_before", "not_after",
            "generation", "algorithm",
        )  # fmt: skip
        key = {k: getattr(self, k) for k in fields}
        key["today"] = japan_today().isoformat()  # relative validity moves with the date
        return json.dumps(key, sort_keys=True)

    # -- (de)serialization ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardProfile:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown profile keys: {', '.join(unknown)}")
        profile = cls(**data)
        profile.validate()
        return profile

    @classmethod
    def preset(cls, name: str) -> CardProfile:
        """A profile from :data:`PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls.from_dict({**cls().to_dict(), **PRESETS[name]})

    @classmethod
    def load(cls, path: Path) -> CardProfile:
        """Read a profile from a ``.json`` or ``.toml`` file."""
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.from_dict(data)

    def with_overrides(self, overrides: list[str]) -> CardProfile:
        """A copy with ``key=value`` settings applied (values parsed by the field's type)."""
        data = self.to_dict()
        defaults = CardProfile()
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in data or key == "extra":
                raise ValueError(f"bad profile setting {item!r} (use key=value)")
            data[key] = _parse_like(getattr(defaults, key), value.strip())
        return CardProfile.from_dict(data)

    def validate(self) -> None:
        if self.token not in TOKEN_LABELS:
            raise ValueError(f"token must be one of {', '.join(TOKEN_LABELS)}")
        if self.blocked_sw.upper() not in ("6983", "6984"):
            raise ValueError("blocked_sw must be 6983 or 6984")
        if self.refuse_key not in ("", "auth", "sign"):
            raise ValueError("refuse_key must be auth, sign or empty")
        if self.change_pin_refuse and (
            len(self.change_pin_refuse) != 4
            or not all(c in "0123456789abcdefABCDEF" for c in self.change_pin_refuse)
            or self.change_pin_refuse.upper() == "9000"
        ):
            raise ValueError("change_pin_refuse must be a status word in hex other than 9000")
        if self.algorithm not in ("rsa2048", "ec-p384"):
            raise ValueError("algorithm must be rsa2048 or ec-p384")
        atr = bytes.fromhex(resolve_atr(self.atr))
        if not 2 <= len(atr) <= 33 or atr[0] not in (0x3B, 0x3F):
            raise ValueError("atr must be 2..33 bytes starting with 3B or 3F")
        if not 0.0 <= self.hostile_rate <= 1.0:
            raise ValueError("hostile_rate must be 0..1")
        for name in ("auth_tries_left", "sign_tries_left", "card_info_tries_left"):
            if not 0 <= getattr(self, name) <= 15:
                raise ValueError(f"{name} must be 0..15")
        if self.manufacture_number and not (
            len(self.manufacture_number) == 13 and self.manufacture_number.isalnum()
        ):
            raise ValueError("manufacture_number must be 13 letters or digits")
        for value in (self.birth_date, self.cert_birth_date, self.not_before, self.not_after):
            if value:
                dt.date.fromisoformat(value)


def stable_manufacture_number(card_name: str) -> str:
    """The manufacture number a virtual card called ``card_name`` has unless its profile sets
    one: 13 digits, the same for every card of that name."""
    digest = hashlib.sha256(b"mncd-vcard manufacture number\0" + card_name.encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**13:013d}"


def resolve_atr(value: str) -> str:
    """An ATR given as hex or as a preset name."""
    return {**CONTACT_ATRS, **CONTACTLESS_ATRS}.get(value, value).replace(" ", "").replace(":", "")


def _parse_like(default: Any, value: str) -> Any:
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value
