"""Who the daemon says is calling: the pure pieces, a fake /proc, and callers on the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from busstack import daemon_on_private_bus
from dbus_next import Message, Variant
from fakebus import Answer, FakeBus, on_fake_bus, pipe_held
from fakebus import reply as fake_reply
from hypothesis import given
from hypothesis import strategies as st
from pinentry_script import ScriptedPinentry, config_with
from test_daemon_dbus import wait_state

from mncd.card.pin import AUTH_PIN
from mncd.core.callers import (
    MAX_SHOWN,
    PYTHON,
    SHELL,
    Caller,
    Script,
    flatpak_app_id,
    installed_by_system,
    interpreter_syntax,
    pid_of,
    read_process,
    sanitise,
    script_of,
    shorten,
    split_cmdline,
)
from mncd.dbus import service
from mncd.dbus.bus import _CALL, CallInfo, SafeMessageBus
from mncd.dbus.callers import identify, lookup
from mncd.desktop.prompts import dialog, last_try_dialog

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
PYTHON_EXE = os.path.realpath(sys.executable)
PURPOSE = "prove who you are (log in)"
INJECTED = "Enter your PIN for the bank"
REMOVED = "\n\r\t\x00\x1b\x7f\x85\x9b\u2028\u2029\u202a\u202e\u2066\u2069\u200e\u200f\u061c\u200b"

# -- sanitising ------------------------------------------------------------------------------


@given(st.text())
def test_sanitised_text_has_no_control_format_or_line_breaking_character(text):
    clean = sanitise(text)
    assert all(unicodedata.category(c) not in {"Cc", "Cf", "Zl", "Zp", "Cs"} for c in clean)
    assert clean.splitlines() in ([clean], [])
    assert sanitise(clean) == clean


@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"])))
def test_sanitising_keeps_printable_text(text):
    assert sanitise(text) == text


def test_sanitising_removes_c0_c1_del_separators_and_bidi_overrides():
    assert sanitise(f"fire{REMOVED}fox") == "firefox"


@given(st.text(), st.integers(min_value=3, max_value=300))
def test_shortened_text_keeps_its_start_and_end(text, limit):
    short = shorten(text, limit)
    assert len(short) <= limit
    if len(text) <= limit:
        assert short == text
    else:
        head = (limit - 1) // 2
        tail = limit - 1 - head
        assert len(short) == limit and short[head] == "…"
        assert short[:head] == text[:head] and short[head + 1 :] == text[len(text) - tail :]


# -- interpreters and command lines ---------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["python3", "/usr/bin/python3.11", "python", "pypy3", "perl", "perl5.36.0", "ruby3.1",
     "node", "nodejs", "bash", "sh", "dash", "zsh", "/bin/ksh", "gjs", "lua5.4"],
)  # fmt: skip
def test_interpreters_are_known_by_name(name):
    assert interpreter_syntax(name) is not None


@pytest.mark.parametrize(
    "name", ["firefox", "python3-config", "ssh", "gdbus", "/usr/bin/pythonista", "shell", ""]
)
def test_other_programs_are_no_interpreters(name):
    assert interpreter_syntax(name) is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/python3", "/usr/bin/foo"], Script("/usr/bin/foo")),
        (["python3", "-u", "-B", "foo.py", "-c", "x"], Script("foo.py")),
        (["python3", "-W", "ignore", "-X", "dev", "foo.py"], Script("foo.py")),
        (["python3", "-Wignore", "-Xdev", "foo.py"], Script("foo.py")),
        (["python3", "-IsBW", "error", "foo.py"], Script("foo.py")),
        (["python3", "--check-hash-based-pycs", "always", "foo.py"], Script("foo.py")),
        (["python3", "-m", "mncd.cli", "auth"], Script("mncd.cli", module=True)),
        (["python3", "-Bmmncd.cli"], Script("mncd.cli", module=True)),
        (["python3", "-c", "import x", "/usr/lib/firefox/firefox"], None),
        (["python3", "-Ic", "code"], None),
        (["python3", "-"], None),
        (["python3"], None),
        (["python3", "--", "-weird.py"], Script("-weird.py")),
        (["python3", "-m"], None),
    ],
)
def test_python_command_lines(argv, expected):
    assert script_of(argv, PYTHON) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bash", "/usr/bin/tool"], Script("/usr/bin/tool")),
        (["sh", "-e", "-x", "run.sh", "arg"], Script("run.sh")),
        (["bash", "-o", "pipefail", "+o", "posix", "run.sh"], Script("run.sh")),
        (["bash", "--rcfile", "rc", "run.sh"], Script("run.sh")),
        (["bash", "--norc", "run.sh"], Script("run.sh")),
        (["sh", "-c", "exec firefox", "firefox"], None),
        (["bash", "-ec", "code"], None),
        (["sh", "-s", "arg"], None),
    ],
)
def test_shell_command_lines(argv, expected):
    assert script_of(argv, SHELL) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["perl", "-w", "-Mstrict", "-I", "lib", "tool.pl"], Script("tool.pl")),
        (["perl", "-Ilib", "-i.bak", "tool.pl"], Script("tool.pl")),
        (["perl", "-lne", "print", "file"], None),
        (["ruby", "-r", "json", "-I", "lib", "tool.rb"], Script("tool.rb")),
        (["ruby", "-e", "puts 1"], None),
        (["node", "--require", "x", "-r", "y", "--max-old-space-size=99", "app.js"],
         Script("app.js")),
        (["node", "--eval", "code"], None),
        (["node", "--eval=code"], None),
        (["node", "-p", "1+1"], None),
    ],
)  # fmt: skip
def test_other_interpreters_command_lines(argv, expected):
    syntax = interpreter_syntax(argv[0])
    assert syntax is not None
    assert script_of(argv, syntax) == expected


@given(st.lists(st.text(), max_size=8), st.sampled_from(["python3", "perl", "ruby", "node", "sh"]))
def test_the_script_comes_from_the_command_line(argv, interpreter):
    syntax = interpreter_syntax(interpreter)
    assert syntax is not None
    script = script_of([interpreter, *argv], syntax)
    if script is not None:
        assert script.name and any(script.name in arg for arg in argv)


@given(st.lists(st.binary().map(lambda b: b.replace(b"\0", b"")).filter(bool), max_size=6))
def test_cmdline_splits_into_its_arguments(args):
    data = b"".join(arg + b"\0" for arg in args)
    assert split_cmdline(data) == [arg.decode("utf-8", "replace") for arg in args]


# -- Flatpak ----------------------------------------------------------------------------------

FLATPAK_INFO = """\
[Application]
name=org.mozilla.firefox
runtime=runtime/org.freedesktop.Platform/x86_64/23.08

[Instance]
instance-id=1234
"""


@pytest.mark.parametrize(
    ("text", "app"),
    [
        (FLATPAK_INFO, "org.mozilla.firefox"),
        ("# comment\n[Application]\n  name = org.gnome.Evince  \n", "org.gnome.Evince"),
        ("[Instance]\nname=org.evil.App\n[Application]\nname=com.example.Good\n",
         "com.example.Good"),
        ("[Runtime]\nname=org.freedesktop.Platform\n", ""),
        ("[Application]\nname=firefox\n", ""),
        ("[Application]\nname=org.x.a b\n", ""),
        ("[Application]\nname=org.x.App\u202e\n", ""),
        ("[Application]\nname=" + "a." * 200 + "b\n", ""),
        ("", ""),
        ("name=org.no.Group\n", ""),
    ],
)  # fmt: skip
def test_flatpak_app_id(text, app):
    assert flatpak_app_id(text) == app


@given(st.text())
def test_flatpak_app_id_is_a_valid_id_or_nothing(text):
    app = flatpak_app_id(text)
    assert app == "" or (app.count(".") >= 2 and app.isascii() and sanitise(app) == app)


# -- the Caller and the dialog ----------------------------------------------------------------


def test_a_caller_is_sanitised_whatever_builds_it():
    caller = Caller(5, f"/tmp/firefox\n{INJECTED}", "/x/\u202escript", "org.a.B\x1b")
    assert caller.executable == f"/tmp/firefox{INJECTED}"
    assert caller.script == "/x/script" and caller.flatpak_app == "org.a.B"


@pytest.mark.parametrize(
    ("caller", "display", "logged"),
    [
        (Caller(7, "/usr/bin/gdbus"), "/usr/bin/gdbus", "/usr/bin/gdbus, process 7"),
        (Caller(7, "/usr/bin/python3.11", "/usr/bin/foo"), "/usr/bin/foo (python3.11)",
         "/usr/bin/foo run by /usr/bin/python3.11, process 7"),
        (Caller(7, "/app/bin/x", "", "org.a.B"), "org.a.B",
         "Flatpak app org.a.B (/app/bin/x), process 7"),
        (Caller(7), "unknown program", "unknown program, process 7"),
    ],
)  # fmt: skip
def test_caller_names_for_the_dialog_and_the_log(caller, display, logged):
    assert caller.display_name == display
    assert str(caller) == logged


@pytest.fixture
def english(monkeypatch):
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")


@pytest.fixture
def japanese(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "ja")


@pytest.mark.parametrize(
    ("caller", "first_line"),
    [
        (Caller(123, "/usr/bin/gdbus"),
         "The program /usr/bin/gdbus (process 123) wants to prove who you are (log in)."),
        (Caller(123, "/usr/bin/python3.11", "/usr/bin/foo"),
         "The program /usr/bin/foo (python3.11, process 123) wants to prove who you are (log in)."),
        (Caller(123, "/app/bin/x", "", "org.a.B"),
         "The Flatpak app org.a.B (process 123) wants to prove who you are (log in)."),
        (Caller(123), "An unknown program (process 123) wants to prove who you are (log in)."),
        (Caller(0), "An unknown program wants to prove who you are (log in)."),
    ],
)  # fmt: skip
def test_dialog_names_only_what_the_daemon_verified(english, caller, first_line):
    text = dialog(caller, PURPOSE, AUTH_PIN, 3).description
    assert text.splitlines() == [first_line, "Enter your user-authentication PIN: 4 digits.",
                                 "3 tries left."]  # fmt: skip


@pytest.mark.parametrize(
    ("caller", "first_line"),
    [
        (Caller(123, "/usr/bin/gdbus"), "プログラム「/usr/bin/gdbus」（プロセス123）が、"
         "本人であることを証明する（ログイン）ためにマイナンバーカードを使おうとしています。"),
        (Caller(123, "/usr/bin/python3.11", "/usr/bin/foo"),
         "プログラム「/usr/bin/foo」（python3.11で実行、プロセス123）が、"
         "本人であることを証明する（ログイン）ためにマイナンバーカードを使おうとしています。"),
        (Caller(123, "/app/bin/x", "", "org.a.B"), "Flatpakアプリ「org.a.B」（プロセス123）が、"
         "本人であることを証明する（ログイン）ためにマイナンバーカードを使おうとしています。"),
        (Caller(123), "不明なプログラム（プロセス123）が、"
         "本人であることを証明する（ログイン）ためにマイナンバーカードを使おうとしています。"),
    ],
)  # fmt: skip
def test_dialog_in_japanese(japanese, caller, first_line):
    purpose = "本人であることを証明する（ログイン）"
    assert dialog(caller, purpose, AUTH_PIN, 3).description.splitlines()[0] == first_line


def test_last_try_dialog_in_japanese(japanese):
    caller = Caller(9, "/usr/bin/python3.11", "/home/u/bin/sign-tool")
    text = last_try_dialog(caller, AUTH_PIN).description
    assert (
        "プログラム「/home/u/bin/sign-tool」（python3.11で実行、プロセス9）が求めています。" in text
    )


def test_last_try_dialog_in_english(english):
    text = last_try_dialog(Caller(9, "/usr/bin/gdbus"), AUTH_PIN).description
    assert text.endswith("The program /usr/bin/gdbus (process 9) is asking. Continue?")


def test_a_long_path_is_shortened_in_the_dialog_but_not_in_the_log(english):
    path = "/opt/" + "x" * 500 + "/tool"
    caller = Caller(4, path)
    first = dialog(caller, PURPOSE, AUTH_PIN, 3).description.splitlines()[0]
    assert len(first) < MAX_SHOWN + 80 and first.count("…") == 1 and "/tool" in first
    assert path in str(caller)


# -- reading a process: a fake /proc ---------------------------------------------------------


def fake_process(
    proc: Path, pid: int, exe: str | None, cmdline: list[str], cwd: str = "/"
) -> Path:  # fmt: skip
    directory = proc / str(pid)
    (directory / "root").mkdir(parents=True)
    if exe is not None:
        (directory / "exe").symlink_to(exe)
    (directory / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
    (directory / "comm").write_text("firefox\n")
    (directory / "cwd").symlink_to(cwd)
    return directory


def test_an_unreadable_executable_is_an_unknown_program_never_its_comm(tmp_path):
    fake_process(tmp_path, 42, None, ["firefox"])
    caller = read_process(42, proc=str(tmp_path))
    assert caller == Caller(42)
    assert str(caller) == "unknown program, process 42"


def test_a_vanished_process_is_an_unknown_program(tmp_path):
    assert read_process(43, proc=str(tmp_path)) == Caller(43)


def test_a_script_is_read_with_its_full_path(tmp_path):
    fake_process(tmp_path, 44, PYTHON_EXE, ["python3", "-u", "bin/../tool.py"], cwd="/home/u")
    caller = read_process(44, proc=str(tmp_path))
    if installed_by_system(os.stat(PYTHON_EXE)):
        assert caller == Caller(44, PYTHON_EXE, "/home/u/tool.py")
    else:
        assert caller == Caller(44, PYTHON_EXE)


def test_an_interpreter_that_anyone_but_root_may_change_runs_no_named_script(tmp_path):
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_bytes(b"not python")
    fake.chmod(0o775)  # group-writable: a copy that is not the system's
    fake_process(tmp_path / "proc", 45, str(fake), ["python3", "/usr/lib/firefox/firefox"])
    assert read_process(45, proc=str(tmp_path / "proc")) == Caller(45, str(fake))


def test_installed_by_system():
    mode = stat.S_IFREG | 0o755
    assert installed_by_system(os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0)))
    assert not installed_by_system(os.stat_result((mode, 0, 0, 1, 1000, 0, 0, 0, 0, 0)))
    assert not installed_by_system(os.stat_result((mode | 0o020, 0, 0, 1, 0, 0, 0, 0, 0, 0)))
    assert not installed_by_system(os.stat_result((mode | 0o002, 0, 0, 1, 0, 0, 0, 0, 0, 0)))


def test_the_flatpak_app_comes_from_the_process_root(tmp_path):
    process = fake_process(tmp_path, 46, "/app/bin/x\n", ["x"])
    (process / "root" / ".flatpak-info").write_text(FLATPAK_INFO)
    assert read_process(46, proc=str(tmp_path)) == Caller(46, "/app/bin/x", "",
                                                          "org.mozilla.firefox")  # fmt: skip


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_flatpak_info_that_is_no_regular_file_is_ignored(tmp_path, kind):
    process = fake_process(tmp_path, 47, "/usr/bin/x", ["x"])
    info = process / "root" / ".flatpak-info"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(FLATPAK_INFO)
    if kind == "fifo":
        os.mkfifo(info)  # opening it must not block the daemon
    elif kind == "symlink":
        info.symlink_to(elsewhere)
    else:
        info.mkdir()
    assert read_process(47, proc=str(tmp_path)) == Caller(47, "/usr/bin/x")


def test_this_process_reads_as_itself():
    caller = read_process(os.getpid())
    assert caller.pid == os.getpid() and caller.executable == os.path.realpath("/proc/self/exe")
    assert caller.flatpak_app == ""


# -- asking the bus (a stand-in bus answering GetConnectionCredentials) -----------------------

NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"


def credentials_bus(
    tmp_path: Path, credentials: dict[str, Variant] | None, fds: list[int] = (), **options
) -> FakeBus:
    """A stand-in bus answering GetConnectionCredentials with ``credentials`` and ``fds``
    (closed once sent), or with an error when ``credentials`` is None."""

    def answer(call: Message) -> Answer:
        if call.member != "GetConnectionCredentials":
            return []
        if credentials is None:
            error = Message.new_error(call, NAME_HAS_NO_OWNER, "gone")
            return [(error, [])]
        return [(fake_reply(call, "a{sv}", [credentials], unix_fds=list(fds)), list(fds))]

    return FakeBus(tmp_path, answer, **options)


def pidfds() -> int:
    """How many pidfds this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the directory's own descriptor, gone by now
            count += "pidfd" in os.readlink(f"/proc/self/fd/{fd}")
    return count


def test_identify_asks_the_bus_for_the_senders_credentials(tmp_path):
    fake = credentials_bus(tmp_path, {"ProcessID": Variant("u", os.getpid())})
    caller = on_fake_bus(fake, lambda bus: identify(bus, ":1.42"))
    assert caller == read_process(os.getpid()) and caller.executable
    (call,) = fake.calls
    assert (call.member, call.signature, call.body) == ("GetConnectionCredentials", "s", [":1.42"])


def test_the_pidfd_the_bus_passes_pins_the_caller_and_is_closed(tmp_path, monkeypatch):
    before = pidfds()
    pidfd = os.pidfd_open(os.getpid())
    fake = credentials_bus(
        tmp_path, {"ProcessID": Variant("u", os.getpid()), "ProcessFD": Variant("h", 0)}, [pidfd]
    )

    def refuse(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "the daemon must use the bus's pidfd, not open its own")

    async def look_up(bus: SafeMessageBus) -> tuple[bool, int | None, Caller]:
        monkeypatch.setattr(os, "pidfd_open", refuse)
        process = await lookup(bus, ":1.42")
        try:
            return bus.unix_fds, pid_of(process.pidfd), process.read()
        finally:
            process.close()

    negotiated, pinned, caller = on_fake_bus(fake, look_up)
    assert negotiated and "NEGOTIATE_UNIX_FD" in fake.auth
    assert pinned == os.getpid() and caller == read_process(os.getpid())
    assert pidfds() == before  # the fake's copy, the daemon's copy and its duplicate: closed


def test_a_pidfd_of_another_process_makes_an_unknown_program(tmp_path):
    before = pidfds()
    child = subprocess.Popen(["sleep", "30"])
    try:
        fake = credentials_bus(
            tmp_path,
            {"ProcessID": Variant("u", os.getpid()), "ProcessFD": Variant("h", 0)},
            [os.pidfd_open(child.pid)],
        )
        assert on_fake_bus(fake, lambda bus: identify(bus, ":1.42")) == Caller(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert pidfds() == before


def test_descriptors_besides_the_pidfd_are_closed(tmp_path):
    read_end, write_end = os.pipe()
    fake = credentials_bus(
        tmp_path,
        {"ProcessID": Variant("u", os.getpid()), "ProcessFD": Variant("h", 1)},
        [write_end, os.pidfd_open(os.getpid())],
    )
    assert on_fake_bus(fake, lambda bus: identify(bus, ":1.42")) == read_process(os.getpid())
    assert not pipe_held(read_end)
    os.close(read_end)


def test_a_bus_that_passes_no_descriptors_still_names_the_caller(tmp_path):
    fake = credentials_bus(tmp_path, {"ProcessID": Variant("u", os.getpid())}, agree_fds=False)

    async def look_up(bus: SafeMessageBus) -> tuple[bool, Caller]:
        return bus.unix_fds, await identify(bus, ":1.42")

    negotiated, caller = on_fake_bus(fake, look_up)
    assert "NEGOTIATE_UNIX_FD" in fake.auth and not negotiated
    assert caller == read_process(os.getpid())


def test_a_process_that_exited_is_an_unknown_program():
    child = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(child.pid)
    try:
        child.kill()
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # a zombie: /proc/PID remains
        assert read_process(child.pid, pidfd) == Caller(child.pid)
    finally:
        os.close(pidfd)
        child.wait()


@pytest.mark.parametrize(
    "credentials",
    [None, {}, {"ProcessID": Variant("s", "1")}, {"ProcessID": Variant("u", 0)}],
)
def test_no_usable_credentials_make_an_unknown_program(tmp_path, credentials):
    fake = credentials_bus(tmp_path, credentials)
    assert on_fake_bus(fake, lambda bus: identify(bus, ":1.42")) == Caller(0)


# -- a caller read at each call ----------------------------------------------------------------


async def in_call(sender: str, handler: Callable[[], Awaitable[T]]) -> T:
    """Run ``handler`` as the daemon runs a method of a call from ``sender``."""
    context = contextvars.copy_context()
    context.run(_CALL.set, CallInfo(sender))
    return await asyncio.get_running_loop().create_task(handler(), context=context)


def test_the_daemon_asks_the_bus_once_per_recent_sender_and_closes_the_pidfds_it_drops(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(service, "CALLER_CACHE_SIZE", 2)
    before = pidfds()

    def answer(call: Message) -> Answer:
        if call.member != "GetConnectionCredentials":
            return []
        credentials = {"ProcessID": Variant("u", os.getpid()), "ProcessFD": Variant("h", 0)}
        pidfd = os.pidfd_open(os.getpid())
        return [(fake_reply(call, "a{sv}", [credentials], unix_fds=[pidfd]), [pidfd])]

    async def calls(bus: SafeMessageBus) -> tuple[list[Caller], dict[str, int | None]]:
        interface = service.MyNumberCardInterface(None, bus)  # type: ignore[arg-type]
        senders = [":1.1", ":1.2", ":1.1", ":1.3", ":1.1"]
        callers = [await in_call(sender, interface._caller) for sender in senders]
        kept = {sender: pid_of(process.pidfd) for sender, process in interface._callers.items()}
        for process in interface._callers.values():
            process.close()
        return callers, kept

    fake = FakeBus(tmp_path, answer)
    callers, kept = on_fake_bus(fake, calls)
    assert callers == [read_process(os.getpid())] * 5
    # The least recently calling sender is dropped (:1.2), its pidfd closed.
    assert [call.body[0] for call in fake.calls] == [":1.1", ":1.2", ":1.3"]
    assert kept == {":1.1": os.getpid(), ":1.3": os.getpid()}
    assert pidfds() == before


# -- callers on the real stack ----------------------------------------------------------------

CLIENT = """\
import asyncio, sys
from mncd.client import MyNumberCard

async def main() -> None:
    card = await MyNumberCard.connect(sys.argv[1])
    try:
        await card.authenticate(b"challenge")
    except Exception as exc:
        print(type(exc).__name__)
    finally:
        await card.close()

asyncio.run(main())
"""

NOT_DUMPABLE = """\
import ctypes
libc = ctypes.CDLL(None)
libc.prctl(15, b"firefox")  # PR_SET_NAME: what /proc/PID/comm says
libc.prctl(4, 0)  # PR_SET_DUMPABLE 0: /proc/PID/exe unreadable to others
"""


def run_caller(command: list[str], address: str, **kwargs) -> int:
    """Run a client calling Authenticate without a PIN; its pid."""
    process = subprocess.Popen(
        [*command, address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.strip() == "Cancelled", out + err
    return process.pid


def first_line(pinentry: ScriptedPinentry) -> str:
    (description,) = pinentry.descriptions()
    lines = description.splitlines()
    assert lines[1:] == ["Enter your user-authentication PIN: 4 digits.", "3 tries left."]
    return lines[0]


def requested_by(log: str) -> str:
    (line,) = [line for line in log.splitlines() if "Authenticate requested by" in line]
    return line.split("Authenticate requested by ", 1)[1]


@pytest.fixture
def stack(tmp_path, sandbox, card):
    pinentry = ScriptedPinentry(tmp_path / "pinentry", ["cancel"])
    env = {
        **sandbox.env,
        **config_with(tmp_path, pinentry),
        "LANG": "C.UTF-8",
        "LANGUAGE": "",
        "DISPLAY": ":0",
    }  # a session with a screen, where PIN dialogs can be shown
    (tmp_path / "bus").mkdir()
    with daemon_on_private_bus(tmp_path / "bus", env) as daemon:
        wait_state(daemon.bus.address, "card-present")
        yield daemon, pinentry
    assert "Traceback" not in daemon.log


def python_copy(path: Path) -> tuple[list[str], dict[str, str]]:
    """A copy of this Python at ``path``, and the environment it needs to import mncd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(PYTHON_EXE, path)
    site = sysconfig.get_paths()["purelib"]
    return [str(path)], {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), site])}


def test_a_newline_in_the_executables_name_writes_no_line_of_the_dialog(tmp_path, stack):
    daemon, pinentry = stack
    executable = tmp_path / "bin" / f"firefox\n{INJECTED}"
    command, env = python_copy(executable)
    (tmp_path / "client.py").write_text(CLIENT)
    pid = run_caller([*command, str(tmp_path / "client.py")], daemon.bus.address, env=env)
    shown = f"{tmp_path}/bin/firefox{INJECTED}"
    assert first_line(pinentry) == (
        f"The program {shown} (process {pid}) wants to prove who you are (log in)."
    )
    assert requested_by(daemon.log) == f"{shown}, process {pid}"
    assert not any(line.startswith(INJECTED) for line in daemon.log.splitlines())


def test_a_python_script_is_named_with_its_interpreter(tmp_path, stack):
    daemon, pinentry = stack
    script = tmp_path / "sign-tool.py"
    script.write_text(CLIENT)
    pid = run_caller([sys.executable, script.name], daemon.bus.address, cwd=tmp_path)
    interpreter = os.path.basename(PYTHON_EXE)
    assert interpreter.startswith("python3")
    if not installed_by_system(os.stat(PYTHON_EXE)):
        pytest.skip("this Python is not installed by root: its scripts are not named")
    assert first_line(pinentry) == (
        f"The program {script} ({interpreter}, process {pid}) wants to prove who you are (log in)."
    )
    assert requested_by(daemon.log) == f"{script} run by {PYTHON_EXE}, process {pid}"


def test_a_copy_of_python_named_python3_names_no_script(tmp_path, stack):
    daemon, pinentry = stack
    fake = tmp_path / "evil" / "python3"
    command, env = python_copy(fake)
    fake.chmod(0o775)  # made by someone other than root: group-writable stands in for that
    claimed = tmp_path / "firefox"
    claimed.write_text(CLIENT)
    pid = run_caller([*command, str(claimed)], daemon.bus.address, env=env)
    assert first_line(pinentry) == (
        f"The program {fake} (process {pid}) wants to prove who you are (log in)."
    )


def test_a_process_that_is_not_dumpable_is_never_named_by_its_comm(tmp_path, stack):
    daemon, pinentry = stack
    script = tmp_path / "hidden.py"
    script.write_text(NOT_DUMPABLE + CLIENT)
    pid = run_caller([sys.executable, str(script)], daemon.bus.address)
    line = first_line(pinentry)
    assert "firefox" not in line and "firefox" not in requested_by(daemon.log)
    if line.startswith("An unknown program"):  # not root: the executable is unreadable
        assert line == f"An unknown program (process {pid}) wants to prove who you are (log in)."
        assert requested_by(daemon.log) == f"unknown program, process {pid}"
    else:  # root reads it anyway: still the verified executable, not the comm
        assert str(script) in line or PYTHON_EXE in line


EXEC_CALLER = """\
import os, socket, sys
from dbus_next import Message
from dbus_next._private.unmarshaller import Unmarshaller

bus_socket, stage = sys.argv[1], sys.argv[2]


def call(sock, serial, member, signature="", body=(), destination="io.github.mncd.MyNumberCard1",
         path="/io/github/mncd/MyNumberCard1", interface="io.github.mncd.MyNumberCard1"):
    message = Message(destination=destination, path=path, interface=interface, member=member,
                      signature=signature, body=list(body), serial=serial)
    sock.sendall(message._marshall())
    stream = sock.makefile("rb", buffering=0)  # reads no byte beyond the messages it returns
    while True:
        reader = Unmarshaller(stream)
        while reader.unmarshall() is None:
            pass
        if reader.message.reply_serial == serial:
            return reader.message


if stage == "first":
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(bus_socket)
    sock.sendall(b"\\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\\r\\n")
    answer = b""
    while not answer.endswith(b"\\r\\n"):
        answer += sock.recv(1)
    sock.sendall(b"BEGIN\\r\\n")
    call(sock, 1, "Hello", destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
         interface="org.freedesktop.DBus")
else:
    sock = socket.socket(fileno=int(sys.argv[3]))
serial = 2 if stage == "first" else 3
reply = call(sock, serial, "Authenticate", "aya{sv}", [b"challenge", {}])
print(reply.error_name, flush=True)
if stage == "first":  # the same process and connection go on as another program
    os.set_inheritable(sock.fileno(), True)
    second = sys.argv[3]
    os.execv(second, [second, sys.argv[0], bus_socket, "second", str(sock.fileno())])
"""


def test_a_caller_that_execs_another_program_is_named_by_the_program_it_runs(tmp_path, stack):
    """One process, one bus connection: it calls, execs another program that keeps the
    connection, and calls again. The second dialog and log line name the second program."""
    daemon, pinentry = stack
    first, env = python_copy(tmp_path / "bin" / "first-program")
    second, _ = python_copy(tmp_path / "bin" / "second-program")
    script = tmp_path / "exec-caller.py"
    script.write_text(EXEC_CALLER)
    process = subprocess.Popen(
        [*first, str(script), str(daemon.bus.socket), "first", *second],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = process.communicate(timeout=120)
    cancelled = "io.github.mncd.MyNumberCard1.Error.Cancelled"
    assert out.split() == [cancelled, cancelled], err
    pid = process.pid  # the same process throughout: execv keeps the pid
    purpose = "wants to prove who you are (log in)."
    assert [text.splitlines()[0] for text in pinentry.descriptions()] == [
        f"The program {first[0]} (process {pid}) {purpose}",
        f"The program {second[0]} (process {pid}) {purpose}",
    ]
    assert [
        line.split("Authenticate requested by ", 1)[1]
        for line in daemon.log.splitlines()
        if "Authenticate requested by" in line
    ] == [f"{first[0]}, process {pid}", f"{second[0]}, process {pid}"]
