"""The ``a{sv}`` options of the D-Bus methods: typed, checked, and a PIN's shape checked before
it goes anywhere."""

from __future__ import annotations

from typing import Any

from dbus_next import Variant

from mncd import errors
from mncd.card.pin import PinPolicy


def option(options: dict[str, Variant], name: str, signature: str, default: Any) -> Any:
    """The value of option ``name`` (``default`` when not given), refused if not ``signature``."""
    value = options.get(name)
    if value is None:
        return default
    if value.signature != signature:
        raise errors.InvalidArgument(f"option {name!r} must have type {signature!r}")
    return value.value


def pin_option(options: dict[str, Variant], name: str, policy: PinPolicy) -> bytearray | None:
    """The PIN given in option ``name``, its shape checked; None when not given."""
    text = option(options, name, "s", None)
    return policy.check(text) if text is not None else None


def check_options(options: dict[str, Variant], known: dict[str, str]) -> None:
    """Refuse an option not in ``known`` (name: signature) or of another type."""
    for name in options:
        if name not in known:
            raise errors.InvalidArgument(f"unknown option {name!r}")
        option(options, name, known[name], None)
