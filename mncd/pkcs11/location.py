"""Where the daemon serves PKCS#11, shared by the server and ``mncctl pkcs11``."""

from __future__ import annotations

import os
from pathlib import Path


def socket_path() -> Path | None:
    """``$XDG_RUNTIME_DIR/mncd/pkcs11`` (None without an absolute runtime directory)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.isabs(runtime):
        return None
    return Path(runtime) / "mncd" / "pkcs11"


def address(path: Path) -> str:
    """The address p11-kit takes (``P11_KIT_SERVER_ADDRESS``, ``remote:`` of a module file)."""
    return f"unix:path={path}"
