"""What one application's PKCS#11 calls need of the daemon: no more than this."""

from __future__ import annotations

from typing import NamedTuple

from mncd.core.manager import CardManager
from mncd.pkcs11.tokens import SlotTable


class ModuleContext(NamedTuple):
    """The card manager (its use cases and PIN gate), the slots it shows as tokens, and how
    long a PIN given to C_Login on the authentication token is held."""

    manager: CardManager
    slots: SlotTable
    login_timeout: float
