"""Where the daemon serves PKCS#11, shared by the server, ``mncctl pkcs11`` and ``doctor``.

The daemon listens on three sockets in ``$XDG_RUNTIME_DIR/mncd/``, each a door to some of the
card's tokens:

- ``pkcs11``: both tokens, for a program pointed at it (``P11_KIT_SERVER_ADDRESS``);
- ``pkcs11-login``: the user-authentication token alone. p11-kit's proxy reaches it through
  ``mncd.module``, so browsers, OpenSSH and GnuTLS log in with the card and never see the signing
  token (nor ask for its password). Its key is found without C_Login and the daemon asks for the
  PIN when it signs: a browser that needs what the card cannot make (RSA-PSS for TLS 1.3) finds
  that out before anyone is asked for a PIN;
- ``pkcs11-signing``: the signing token alone, which ``mncd-signing.module`` enables only in
  document-signing programs (p11-kit's ``enable-in``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Door(NamedTuple):
    """One socket of the PKCS#11 server and the tokens it shows (key names: auth, sign);
    ``login_free``: keys an application finds and uses without C_Login, the daemon asking for
    the PIN at each signature (after the application chose a mechanism the card has)."""

    name: str
    keys: frozenset[str]
    login_free: frozenset[str] = frozenset()


ALL_TOKENS = Door("pkcs11", frozenset({"auth", "sign"}))
LOGIN = Door("pkcs11-login", frozenset({"auth"}), login_free=frozenset({"auth"}))
SIGNING = Door("pkcs11-signing", frozenset({"sign"}))
DOORS = (ALL_TOKENS, LOGIN, SIGNING)


def socket_path(door: Door = ALL_TOKENS) -> Path | None:
    """``$XDG_RUNTIME_DIR/mncd/<door>`` (None without an absolute runtime directory)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.isabs(runtime):
        return None
    return Path(runtime) / "mncd" / door.name


def address(path: Path) -> str:
    """The address p11-kit takes (``P11_KIT_SERVER_ADDRESS``, ``remote:`` of a module file)."""
    return f"unix:path={path}"
