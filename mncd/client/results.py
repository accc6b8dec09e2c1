"""What the daemon answers, as typed immutable records: NamedTuples (mncctl defines them on
every start, and a NamedTuple takes a seventh of the time a frozen dataclass does)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from dbus_next import Variant


def plain(value: Any) -> Any:
    """D-Bus values (Variants, dicts, lists, bytes) as plain Python values (bytes as hex)."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def _time(value: Any) -> dt.datetime | None:
    seconds = _int(value, 0)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds else None


class CertificateStatus(NamedTuple):
    """One certificate (``auth`` or ``sign``) as GetStatus describes it; never personal data."""

    present: bool = False
    source: str = "none"  #: card, cache or none
    state: str = "unknown"  #: valid, expiring, expired, invalidated or unknown
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    days_left: int | None = None  #: None when the expiry date is not known
    serial: str = ""
    fingerprint: str = ""  #: SHA-256, hex
    issuer: str = ""
    algorithm: str = ""
    pin_tries_left: int | None = None  #: None when not known
    previous_fingerprint: str = ""  #: the signing certificate the card held before, if revoked
    previous_state: str = ""
    #: mncd holds the certificate itself, read from the card in the reader since it was inserted
    #: (for ``sign``: CheckPersonalData then needs no signing password)
    certificate_held: bool = False

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> CertificateStatus:
        not_after = _time(data.get("not_after"))
        tries = _int(data.get("pin_tries_left"), -1)
        return cls(
            present=data.get("present") is True,
            source=_str(data.get("source")) or "none",
            state=_str(data.get("state")) or "unknown",
            not_before=_time(data.get("not_before")),
            not_after=not_after,
            days_left=_int(data.get("days_left"), 0) if not_after else None,
            serial=_str(data.get("serial")),
            fingerprint=_str(data.get("fingerprint")),
            issuer=_str(data.get("issuer")),
            algorithm=_str(data.get("algorithm")),
            pin_tries_left=tries if tries >= 0 else None,
            previous_fingerprint=_str(data.get("previous_fingerprint")),
            previous_state=_str(data.get("previous_state")),
            certificate_held=data.get("certificate_held") is True,
        )


class KnownCard(NamedTuple):
    """A card the daemon remembers (GetStatus ``cards``)."""

    card_id: str
    last_seen: dt.datetime | None = None
    not_after: dt.datetime | None = None  #: its authentication certificate's
    renewed_to: str = ""  #: the card id its renewed certificates have, if renewed

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> KnownCard:
        return cls(
            card_id=_str(data.get("card_id")),
            last_seen=_time(data.get("last_seen")),
            not_after=_time(data.get("not_after")),
            renewed_to=_str(data.get("renewed_to")),
        )


class Status(NamedTuple):
    """GetStatus: the daemon's state, readers, and both certificates."""

    #: pcsc-unavailable, no-reader, no-card, reading, card-present, unknown-card or
    #: unreadable-card
    state: str = ""
    readers: tuple[str, ...] = ()
    reader: str = ""  #: the reader holding the card present or being read, if any
    token: str = ""  #: card, android, iphone, juki (only card is served)
    unsupported_readers: tuple[str, ...] = ()
    card_id: str = ""  #: the card described (what ``forget_card`` takes)
    cards: tuple[KnownCard, ...] = ()  #: every card the daemon remembers, latest first
    auth: CertificateStatus = CertificateStatus()
    sign: CertificateStatus = CertificateStatus()
    #: Every key as the daemon sent it, as plain values (JSON-ready; keys a newer daemon adds).
    raw: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> Status:
        """From GetStatus's ``a{sv}`` (Variants or plain values)."""
        data = plain(body)

        def certificate(which: str) -> CertificateStatus:
            value = data.get(which)
            return (
                CertificateStatus.from_plain(value)
                if isinstance(value, Mapping)
                else (CertificateStatus())
            )

        return cls(
            state=_str(data.get("state")),
            readers=_strings(data.get("readers")),
            reader=_str(data.get("reader")),
            token=_str(data.get("token")),
            unsupported_readers=_strings(data.get("unsupported_readers")),
            card_id=_str(data.get("card_id")),
            cards=tuple(
                KnownCard.from_plain(item)
                for item in data.get("cards", ())
                if isinstance(item, Mapping)
            ),
            auth=certificate("auth"),
            sign=certificate("sign"),
            raw=data,
        )

    def certificate(self, which: str) -> CertificateStatus:
        """``auth`` or ``sign``."""
        return {"auth": self.auth, "sign": self.sign}[which]


class SignedData(NamedTuple):
    """A signature from the card, already verified by the daemon, and its certificate (DER)."""

    signature: bytes
    certificate: bytes


class PersonalDataCheck(NamedTuple):
    """CheckPersonalData: whether the card's data still match the signing certificate."""

    matches: bool
    changed: tuple[str, ...]  #: kinds of data that differ (name, address, ...), never values
    state: str  #: the signing certificate's state afterwards


class PinCounter(NamedTuple):
    """One PIN's counter as GetPinStatus read it from the card."""

    present: bool = False
    tries_left: int | None = None  #: None when the card has no such PIN
    max_tries: int = 0

    @classmethod
    def from_plain(cls, data: Any) -> PinCounter:
        if not isinstance(data, Mapping):
            return cls()
        tries = _int(data.get("tries_left"), -1)
        present = data.get("present") is True
        return cls(
            present, tries if present and tries >= 0 else None, _int(data.get("max_tries"), 0)
        )


class PinStatus(NamedTuple):
    """GetPinStatus: the tries left on each PIN (``auth``, ``sign``, ``card-info``), live."""

    reader: str = ""
    auth: PinCounter = PinCounter()
    sign: PinCounter = PinCounter()
    card_info: PinCounter = PinCounter()
    #: Every key as the daemon sent it, as plain values.
    raw: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> PinStatus:
        data = plain(body)
        return cls(
            reader=_str(data.get("reader")),
            auth=PinCounter.from_plain(data.get("auth")),
            sign=PinCounter.from_plain(data.get("sign")),
            card_info=PinCounter.from_plain(data.get("card-info")),
            raw=data,
        )

    def counter(self, which: str) -> PinCounter:
        """``auth``, ``sign`` or ``card-info``."""
        return {"auth": self.auth, "sign": self.sign, "card-info": self.card_info}[which]


class Event(NamedTuple):
    """A signal of the daemon: ``CardInserted``, ``CardRemoved``, ``CertificateStatusChanged``
    (args as a list), ``PropertiesChanged`` (args as a dict), ``DaemonStarted`` or
    ``DaemonStopped`` (the name got or lost its owner)."""

    name: str
    args: list[Any] | dict[str, Any]


class ServiceSignatures(NamedTuple):
    """SignDigestInfo's answer: the signatures in the order asked, the key's certificate, and
    when asked for the installation's id and the card's combination code."""

    signatures: tuple[bytes, ...]
    certificate: bytes
    installation_id: str = ""
    combination_code: str = ""

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> ServiceSignatures:
        values = {key: value.value if isinstance(value, Variant) else value
                  for key, value in body.items()}  # fmt: skip
        return cls(
            tuple(bytes(item) for item in values.get("signatures") or ()),
            bytes(values.get("certificate") or b""),
            _str(values.get("installation-id")),
            _str(values.get("combination-code")),
        )


class CardInfo(NamedTuple):
    """ReadCardInfo's answer: personal data for this caller only (keep it no longer than
    needed; its repr shows none of it)."""

    name: str
    address: str
    birth_date: str  #: YYYYMMDD, as on the card
    sex: str  #: ISO 5218 digit, as on the card
    installation_id: str = ""
    combination_code: str = ""

    def __repr__(self) -> str:
        return "CardInfo(<personal data>)"

    @classmethod
    def from_dbus(cls, body: Mapping[str, Any]) -> CardInfo:
        values = plain(dict(body))
        return cls(
            _str(values.get("name")),
            _str(values.get("address")),
            _str(values.get("birth-date")),
            _str(values.get("sex")),
            _str(values.get("installation-id")),
            _str(values.get("combination-code")),
        )
