"""Who is calling: the process behind a D-Bus sender, named only by what the kernel vouches for.

A front door gives the caller's process (the bus's ``GetConnectionCredentials``, a socket's
peer credentials: its pid, and a pidfd where one is offered). The kernel gives that process's
executable as a full path (``/proc/PID/exe``): that path is the caller's name. The daemon never
falls back to ``/proc/PID/comm`` or ``argv[0]``, which the caller sets itself; when the
executable cannot be read, the caller is an unknown program.

Two additions, each no stronger than its source:

- an interpreter installed by the system (``python3``, ``perl``, ``sh``, ... owned by root)
  runs the script named on its command line; the command line is the process's own claim, so
  the dialog names the script together with the interpreter that runs it;
- a Flatpak app is named by the ``.flatpak-info`` in its root, as the desktop portal names it.

Every text taken from the process has its control characters removed (:func:`sanitise`) before
it reaches a dialog or the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, fields

log = logging.getLogger(__name__)

PROC = "/proc"
#: Most bytes read from a process's command line or .flatpak-info.
MAX_READ = 64 * 1024
#: Longest text a dialog shows for one name; longer ones keep their start and end.
MAX_SHOWN = 200

#: Unicode categories removed from every name: controls (C0, DEL, C1), format characters
#: (bidi overrides and isolates, zero-width characters), line and paragraph separators, and
#: lone surrogates.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def sanitise(text: str) -> str:
    """``text`` without control, format or line-breaking characters."""
    return "".join(c for c in text if unicodedata.category(c) not in _REMOVED_CATEGORIES)


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut in the middle to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


@dataclass(frozen=True)
class Caller:
    """Who asked, as far as the bus and the kernel can tell (every text sanitised)."""

    pid: int
    #: Full path of the executable (``/proc/PID/exe``); empty when it could not be read.
    executable: str = ""
    #: The script (full path) or Python module an interpreter runs; empty for other programs.
    script: str = ""
    #: The Flatpak app ID from the process's ``/.flatpak-info``; empty outside Flatpak.
    flatpak_app: str = ""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, str):
                object.__setattr__(self, field.name, sanitise(value))

    @property
    def interpreter(self) -> str:
        """The interpreter's name when a script is named (its path is :attr:`executable`)."""
        return os.path.basename(self.executable) if self.script else ""

    @property
    def display_name(self) -> str:
        """What a dialog names the program (shortened), without the pid."""
        if self.flatpak_app:
            return shorten(self.flatpak_app)
        if self.script:
            return f"{shorten(self.script)} ({self.interpreter})"
        return shorten(self.executable) if self.executable else "unknown program"

    def __str__(self) -> str:
        """The caller for the log, in full."""
        if self.flatpak_app:
            return f"Flatpak app {self.flatpak_app} ({self.executable}), process {self.pid}"
        if self.script:
            return f"{self.script} run by {self.executable}, process {self.pid}"
        if self.executable:
            return f"{self.executable}, process {self.pid}"
        return f"unknown program, process {self.pid}"


# -- interpreters and their command lines ------------------------------------------------------


@dataclass(frozen=True)
class Syntax:
    """How an interpreter's command line names what it runs."""

    #: Short options whose value, when not attached, is the next argument.
    with_value: str = ""
    #: Short options whose (optional) value can only be attached: the rest of the argument.
    attached_value: str = ""
    #: Short options whose value is program text: no script file.
    inline_code: str = ""
    #: Short option naming a module to run (Python's ``-m``).
    module: str = ""
    #: Long options whose value, when not given with ``=``, is the next argument.
    long_with_value: frozenset[str] = frozenset()
    #: Long options whose value is program text.
    long_inline_code: frozenset[str] = frozenset()


PYTHON = Syntax(with_value="WX", inline_code="c", module="m",
                long_with_value=frozenset({"--check-hash-based-pycs"}))  # fmt: skip
PERL = Syntax(with_value="I", attached_value="MmxidD", inline_code="eE")
RUBY = Syntax(with_value="IrCE", attached_value="xKFiTWd", inline_code="e")
NODE = Syntax(
    with_value="r", inline_code="ep",
    long_with_value=frozenset({"--require", "--import", "--loader", "--experimental-loader",
                               "--input-type", "--conditions", "--title"}),
    long_inline_code=frozenset({"--eval", "--print"}),
)  # fmt: skip
SHELL = Syntax(with_value="oO", inline_code="cs",
               long_with_value=frozenset({"--rcfile", "--init-file"}))  # fmt: skip
LUA = Syntax(with_value="l", inline_code="e")

#: Interpreters by the name of their executable.
INTERPRETERS: tuple[tuple[re.Pattern[str], Syntax], ...] = (
    (re.compile(r"(python|pypy)[0-9.]*d?m?"), PYTHON),
    (re.compile(r"perl[0-9.]*"), PERL),
    (re.compile(r"ruby[0-9.]*"), RUBY),
    (re.compile(r"node(js)?[0-9.]*|gjs(-console)?"), NODE),
    (re.compile(r"(ba|da|z|k|mk|yash|fi)?sh"), SHELL),
    (re.compile(r"lua(jit)?[0-9.]*"), LUA),
)


def interpreter_syntax(executable: str) -> Syntax | None:
    """The command-line syntax of ``executable`` when it is an interpreter."""
    name = os.path.basename(executable)
    for pattern, syntax in INTERPRETERS:
        if pattern.fullmatch(name):
            return syntax
    return None


@dataclass(frozen=True)
class Script:
    """What an interpreter's command line says it runs."""

    name: str  #: the script's path as written, or a module's name
    module: bool = False


def script_of(argv: Sequence[str], syntax: Syntax) -> Script | None:
    """The script or module an interpreter's ``argv`` runs; None when it runs program text
    (``-c``, ``-e``) or standard input."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            following = next(args, "")
            return Script(following) if following else None
        if arg in ("", "-"):
            return None
        if arg.startswith("--"):
            name, equals, _value = arg.partition("=")
            if name in syntax.long_inline_code:
                return None
            if name in syntax.long_with_value and not equals:
                next(args, None)
            continue
        if arg[0] not in "-+":
            return Script(arg)
        letters = arg[1:]
        for i, letter in enumerate(letters):
            attached = letters[i + 1 :]
            if letter in syntax.inline_code:
                return None
            if letter in syntax.module:
                module = attached or next(args, "")
                return Script(module, module=True) if module else None
            if letter in syntax.with_value:
                if not attached:
                    next(args, None)
                break
            if letter in syntax.attached_value:
                break
    return None


def split_cmdline(data: bytes) -> list[str]:
    """``/proc/PID/cmdline`` as arguments (undecodable bytes replaced)."""
    if data.endswith(b"\0"):
        data = data[:-1]
    return [arg.decode("utf-8", "replace") for arg in data.split(b"\0")] if data else []


# -- Flatpak -----------------------------------------------------------------------------------

_APP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_-][A-Za-z0-9_-]*){2,}", re.ASCII)


def flatpak_app_id(text: str) -> str:
    """The ``name`` of the ``[Application]`` group of a ``.flatpak-info``; empty when missing
    or not a valid app ID."""
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        if group == "Application" and equals and key.strip() == "name":
            app = value.strip()
            return app if len(app) <= 255 and _APP_ID.fullmatch(app) else ""
    return ""


# -- reading the process -----------------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _read(name: str, dir_fd: int, flags: int = 0) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | flags, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        chunks, size = [], 0
        while size < MAX_READ:
            chunk = os.read(fd, MAX_READ - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def installed_by_system(info: os.stat_result) -> bool:
    """Whether a file is root's and only root may change it (not a copy a user made)."""
    return info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _script(process: int, executable: str) -> str:
    """The script (full path) or module an interpreter installed by the system runs."""
    syntax = interpreter_syntax(executable)
    if syntax is None or not installed_by_system(os.stat("exe", dir_fd=process)):
        return ""
    script = script_of(split_cmdline(_read("cmdline", process)), syntax)
    if script is None:
        return ""
    if script.module:
        return script.name
    path = script.name
    if not path.startswith("/"):
        try:
            path = os.path.join(_text(os.readlink(b"cwd", dir_fd=process)), path)
        except OSError:
            return path  # as written: the process's directory is unknown
    return os.path.normpath(path)


def _flatpak_app(process: int) -> str:
    try:
        root = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=process)
    except OSError:
        return ""
    try:
        return flatpak_app_id(_text(_read(".flatpak-info", root, os.O_NOFOLLOW)))
    except OSError:
        return ""
    finally:
        os.close(root)


def _running(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has not exited (a pidfd polls readable on exit)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def pid_of(pidfd: int) -> int | None:
    """The pid a pidfd refers to, from ``/proc/self/fdinfo``."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def read_process(pid: int, pidfd: int | None = None, proc: str = PROC) -> Caller:
    """The caller for process ``pid``. With ``pidfd`` (the same process, pinned), the reads are
    known to be of that process and not of a later one given the same pid."""
    own_pidfd = None
    if pidfd is None and proc == PROC:
        pidfd = own_pidfd = _pidfd_open(pid)
    try:
        try:
            process = os.open(f"{proc}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return Caller(pid)
        try:
            # From here on, reads through ``process`` fail if that process is gone: checking
            # once that the pinned process still runs ties the directory to it.
            if pidfd is not None and not _running(pidfd):
                return Caller(pid)
            return _read_process(pid, process)
        finally:
            os.close(process)
    finally:
        if own_pidfd is not None:
            os.close(own_pidfd)


def _read_process(pid: int, process: int) -> Caller:
    try:
        executable = _text(os.readlink(b"exe", dir_fd=process))
    except OSError:
        executable = ""
    script = ""
    if executable:
        try:
            script = _script(process, executable)
        except OSError:
            script = ""
    return Caller(pid, executable, script, _flatpak_app(process))


class CallerProcess:
    """The process behind a bus connection, pinned by a pidfd where one could be had, and read
    anew at each call (:meth:`read`): after an exec it is named by the program it runs now,
    and once it has exited it is an unknown program (never a later process given its pid)."""

    def __init__(self, pid: int, pidfd: int | None = None, known: bool = True) -> None:
        self.pid = pid  #: 0 when the bus did not say
        self.pidfd = pidfd
        #: False when the process cannot be told: gone before it was pinned, or the bus's
        #: pidfd is of another process.
        self.known = known

    def read(self) -> Caller:
        """The caller, as its process is now."""
        if self.pid <= 0 or not self.known:
            return Caller(max(self.pid, 0))
        return read_process(self.pid, self.pidfd)

    def close(self) -> None:
        """Close the pidfd (the caller is then read unpinned)."""
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


def parent_executable(pid: int, proc: str = PROC) -> str:
    """Full path of the executable of ``pid``'s parent (the browser that started a
    native-messaging host, say), as the kernel gives it; empty when it cannot be read."""
    if pid <= 0:
        return ""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as stat_file:
            fields_after_name = stat_file.read(MAX_READ).rpartition(b")")[2].split()
        parent = int(fields_after_name[1])
        if parent <= 1:
            return ""
        return sanitise(_text(os.readlink(f"{proc}/{parent}/exe".encode())))
    except (OSError, ValueError, IndexError):
        return ""
