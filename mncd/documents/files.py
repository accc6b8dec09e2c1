"""Reading inputs and writing outputs: never over an existing file unless asked, atomically,
0600 (a signed document carries the signing certificate, which holds personal data).

Temporary files are made 0600 beside the output and removed on every way out: an error, Ctrl-C,
and — inside :func:`removed_on_signals` — SIGTERM and SIGHUP (a ``kill``, a closed terminal).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mncd.documents.errors import DocumentError, OutputExists
from mncd.documents.text import _

#: Signed documents and certificates hold the holder's name, address, birth date and sex.
PRIVATE_MODE = 0o600
#: Signals that end mncctl while it writes (SIGINT raises KeyboardInterrupt by itself).
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: The temporary files being written now, removed by :func:`remove_temporaries`.
_temporaries: set[str] = set()
#: The signal that ended writing, once its handler ran (its exception can be lost when it
#: lands in a finaliser, so publishing checks this too).
_ending: str | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP while writing: mncctl ends as on Ctrl-C, its temporary files gone."""


def remove_temporaries() -> None:
    """Unlink every temporary file being written (nothing else)."""
    for temporary in list(_temporaries):
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        _temporaries.discard(temporary)


def _ended(signum: int, _frame: object) -> None:
    global _ending
    _ending = signal.Signals(signum).name
    remove_temporaries()
    raise Terminated(_ending)


@contextlib.contextmanager
def removed_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP remove the temporary files and raise
    :class:`Terminated` (as Ctrl-C raises KeyboardInterrupt) so every clean-up runs."""
    previous = {number: signal.signal(number, _ended) for number in ENDING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def open_input(path: Path) -> BinaryIO:
    """``path`` opened for reading, or a :class:`DocumentError` saying why it cannot be."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DocumentError(
            _("{path} does not exist: check the file's name and folder.").format(path=path)
        ) from None
    except OSError as exc:
        raise unreadable(path, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise DocumentError(
            _("{path} is a folder, not a file: give a file in it.").format(path=path)
        )
    if not stat.S_ISREG(info.st_mode):
        raise DocumentError(
            _("{path} is not an ordinary file (a device or a pipe): give a file.").format(path=path)
        )
    if info.st_size == 0:
        raise DocumentError(
            _("{path} is empty (0 bytes): check that it was saved completely.").format(path=path)
        )
    try:
        return path.open("rb")
    except OSError as exc:
        raise unreadable(path, exc) from exc


def unreadable(path: Path, exc: OSError) -> DocumentError:
    """Why ``path`` cannot be read, as the error to raise."""
    if isinstance(exc, PermissionError):
        return DocumentError(
            _("{path} cannot be read: you have no permission to read it.").format(path=path)
        )
    return DocumentError(
        _("cannot read {path}: {reason}").format(path=path, reason=exc.strerror or exc)
    )


def check_output(path: Path, *, force: bool = False, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse, before anything is asked or signed, an output that cannot or must not be
    written: an existing file without ``force``, a directory, an input, a missing folder."""
    parent = path.parent
    for source in inputs:
        with contextlib.suppress(OSError):
            if path.exists() and path.samefile(source):
                raise DocumentError(
                    _(
                        "{path} is the input: give another output file (the input is never "
                        "changed)."
                    ).format(path=path)
                )
    if path.is_dir():
        raise DocumentError(
            _("{path} is a folder: give a file name for the output.").format(path=path)
        )
    if path.exists() and not force:
        raise OutputExists(
            _(
                "{path} exists: not overwritten. Give another name, or add --force to replace it."
            ).format(path=path)
        )
    if not parent.is_dir():
        raise DocumentError(
            _("cannot write {path}: no such directory {parent}").format(path=path, parent=parent)
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DocumentError(_("cannot write {path}: permission denied").format(path=path))


@contextlib.contextmanager
def atomic_output(path: Path, *, force: bool = False) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` that becomes ``path`` (0600) only when the block ends
    without an error; ``path`` is never replaced unless ``force``."""
    check_output(path, force=force)
    # No signal between making the file and recording it (mkstemp makes it 0600).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *ENDING_SIGNALS})
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        _temporaries.add(temporary)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    stream = os.fdopen(handle, "w+b")
    done = False
    try:
        os.fchmod(stream.fileno(), PRIVATE_MODE)
        yield stream
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        _publish(Path(temporary), path, force)
        done = True
    finally:
        if not stream.closed:
            stream.close()
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        _temporaries.discard(temporary)


def _publish(temporary: Path, path: Path, force: bool) -> None:
    """Move the finished file into place: atomically, and never over a file that appeared."""
    if _ending is not None:  # a signal ended the writing (its temporary file is gone)
        raise Terminated(_ending)
    try:
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails when path exists, even if it just appeared
            except FileExistsError:
                raise appeared(path) from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise appeared(path) from None
                os.rename(temporary, path)
            else:
                os.unlink(temporary)
    except OSError as exc:
        if _ending is not None:  # the signal came while linking
            raise Terminated(_ending) from exc
        raise DocumentError(
            _("cannot write {path}: {reason}").format(path=path, reason=exc.strerror or exc)
        ) from exc
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def appeared(path: Path) -> OutputExists:
    """The error for an output another program created while it was being written."""
    return OutputExists(
        _(
            "{path} was created by another program meanwhile: not overwritten. Try again with "
            "another output name."
        ).format(path=path)
    )


def write_private(path: Path, data: bytes, *, force: bool = False) -> None:
    """``data`` written to ``path`` atomically, 0600, never over an existing file unless
    ``force``."""
    with atomic_output(path, force=force) as stream:
        stream.write(data)
