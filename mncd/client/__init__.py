"""A typed asyncio client of mncd's D-Bus API, ``io.github.mncd.MyNumberCard1``.

::

    from mncd.client import MyNumberCard

    async with await MyNumberCard.connect() as card:
        status = await card.get_status()
        print(status.state, status.auth.days_left)
        signed = await card.sign(b"document")   # the daemon asks the user for the PIN itself

Errors of the API arrive as the exceptions of :mod:`mncd.errors` (``NoCard``,
``PinIncorrect``, ...); :class:`DaemonUnavailable` when mncd is not running and cannot be
started, :class:`BusUnavailable` when there is no session bus, :class:`BusError` for other
errors of the bus. This is the only package outside :mod:`mncd.dbus` that builds D-Bus messages.
"""

from mncd.client.connection import MyNumberCard, event_from_signal
from mncd.client.errors import (
    BusError,
    BusUnavailable,
    CallTimeout,
    ClientError,
    DaemonUnavailable,
    error_for_reply,
)
from mncd.client.results import (
    CardInfo,
    CertificateStatus,
    Event,
    KnownCard,
    PersonalDataCheck,
    PinCounter,
    PinStatus,
    ServiceSignatures,
    SignedData,
    Status,
    plain,
)

__all__ = [
    "BusError",
    "BusUnavailable",
    "CallTimeout",
    "CardInfo",
    "CertificateStatus",
    "ClientError",
    "DaemonUnavailable",
    "Event",
    "KnownCard",
    "MyNumberCard",
    "PersonalDataCheck",
    "PinCounter",
    "PinStatus",
    "ServiceSignatures",
    "SignedData",
    "Status",
    "error_for_reply",
    "event_from_signal",
    "plain",
]
