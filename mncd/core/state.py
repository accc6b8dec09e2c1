"""The daemon's private files under ``$XDG_STATE_HOME/mncd``: written atomically, read only
when they are ours alone.

A file is written to a temporary file beside it (0600, whatever the umask), fsynced and renamed
over the old one; its directory is 0700. A file that is not a regular file of this user, is open
to others, is too large or cannot be opened is moved aside (quarantined) and treated as absent.
The card cache (:mod:`mncd.core.cache`) and the desktop's small state files use these alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The largest small state file (JSON) read.
MAX_STATE_FILE = 256 * 1024


def read_private(path: Path, limit: int) -> bytes | None:
    """The content of a private regular file of ours of at most ``limit`` bytes, or None
    when it is absent or not to be trusted (then it is moved aside)."""
    try:
        # O_NONBLOCK: a FIFO planted under one of our names must not hang the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("state file %s cannot be opened (%s); ignoring it", path.name, exc)
        quarantine(path, "unreadable")
        return None
    data = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            reason = "not a regular file"
        elif info.st_uid != os.getuid():
            reason = "owned by another user"
        elif info.st_mode & 0o077:
            reason = "readable or writable by others"
        elif info.st_size > limit:
            reason = "too large"
        else:
            reason = ""
            data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if reason:
        log.warning("state file %s is %s; not trusting it", path.name, reason)
        quarantine(path, "untrusted")
    return data


def quarantine(path: Path, reason: str) -> None:
    """Move ``path`` aside as ``<name>.<reason>-<time>`` (kept for the curious, never read)."""
    target = path.with_name(f"{path.name}.{reason}-{int(time.time())}")
    try:
        os.replace(path, target)
    except OSError as exc:
        log.warning("could not move %s aside: %s", path.name, exc)


def read_state_file(path: Path, what: str) -> Any:
    """The JSON in one of the daemon's small state files, or None when there is none or it
    cannot be read (the caller starts afresh; ``what`` names the file in the log)."""
    raw = read_private(path, MAX_STATE_FILE)
    if raw is None:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        log.warning("%s unreadable (%s); starting afresh", what, type(exc).__name__)
        quarantine(path, "corrupt")
        return None


def write_state_file(path: Path, data: Any) -> None:
    """``data`` as JSON in one of the daemon's small state files: private and atomic."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new private file ``.<name>.<random>`` in ``path``'s directory, open for writing (what
    tempfile.mkstemp does; tempfile itself would load shutil and random before the daemon is
    ready)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path.name}")


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path``: temp file, fsync, rename, fsync dir. Private by default;
    ``mode=0o644`` for a file other programs read (a unit, an activation file)."""
    fd, tmp = _temporary_beside(path)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
