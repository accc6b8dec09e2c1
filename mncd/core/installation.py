"""This installation's own id, and the combination code that ties a card to it for a service.

The id is 16 random bytes made once, kept as 32 hex characters in ``installation-id`` (0600) in
the daemon's state directory. The combination code is what the government services' own
client sends with a login (facts in docs/browser.md): SHA-256 over a fixed prefix, the card's
13-character manufacture number and the id's 16 bytes. The manufacture number is used here and
forgotten; neither it nor the code is logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from mncd.core.state import atomic_write, quarantine, read_private

log = logging.getLogger(__name__)

INSTALLATION_FILE = "installation-id"
INSTALLATION_ID_SIZE = 16
#: The bytes before the manufacture number in the combination code (as the services use it).
COMBINATION_PREFIX = bytes.fromhex("2e71f6620bc654ced494e5ec34fe03c8")
_ID_SHAPE = re.compile(r"[0-9a-f]{32}")


def installation_id(root: Path) -> str:
    """The installation's id (32 lower-case hex characters) kept in ``root``, made on first
    use. A file that cannot be trusted is moved aside and replaced."""
    path = root / INSTALLATION_FILE
    data = read_private(path, 2 * INSTALLATION_ID_SIZE + 1)
    if data is not None:
        text = data.decode("ascii", "replace").strip()
        if _ID_SHAPE.fullmatch(text):
            return text
        log.warning("the installation id file is malformed; replacing it")
        quarantine(path, "corrupt")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, os.urandom(INSTALLATION_ID_SIZE).hex().encode("ascii") + b"\n")
    data = read_private(path, 2 * INSTALLATION_ID_SIZE + 1)
    if data is None or not _ID_SHAPE.fullmatch(data.decode("ascii", "replace").strip()):
        raise OSError("cannot create the installation id file")
    return data.decode("ascii").strip()


def combination_code(manufacture_number: str, installation: str) -> str:
    """The combination code of a card (its manufacture number) with this installation."""
    digest = hashlib.sha256(COMBINATION_PREFIX)
    digest.update(manufacture_number.encode("ascii"))
    digest.update(bytes.fromhex(installation))
    return digest.hexdigest()
