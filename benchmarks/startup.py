"""Starting up as a person feels it.

Cold start → ready: mncd against a trivial Python that connects to the bus and owns a name.
``mncctl status`` as a whole process against a minimal dbus-next script making the same call.

Both sides run as an installed mncd would (``pipx install .``): mncd from a wheel built from
this checkout, in a virtual environment of its own, with compiled bytecode. A development
checkout is installed editable (its import hook loads with every interpreter) and, with
``PYTHONDONTWRITEBYTECODE``, compiles mncd's modules from source on every start. The wheel's
environment takes the dependencies from this one; every process writes its bytecode to a private
``PYTHONPYCACHEPREFIX`` in the uncounted first round and reads it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from mncd.api import INTERFACE, OBJECT_PATH
from mncd.vcard.sessionbus import PrivateSessionBus

from .stack import BUS_NAME, NameWatch, Stack, connect
from .stats import Row, summary

TRIVIAL_NAME = "org.example.MncdBenchTrivial"
#: The baseline: the least a Python bus service does before it is ready.
TRIVIAL = f"""
import asyncio, os, socket
from dbus_next.aio import MessageBus

async def main():
    bus = await MessageBus().connect()
    await bus.request_name({TRIVIAL_NAME!r})
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    await asyncio.Event().wait()

asyncio.run(main())
"""
#: The baseline of ``mncctl status``: the least a Python client does for the same call.
MINIMAL_STATUS = f"""
import asyncio
from dbus_next import Message
from dbus_next.aio import MessageBus

async def main():
    bus = await MessageBus().connect()
    reply = await bus.call(Message(destination={BUS_NAME!r}, path={OBJECT_PATH!r},
                                   interface={INTERFACE!r}, member="GetStatus"))
    print(reply.body)

asyncio.run(main())
"""
#: Targets (ratio to the baseline of the same run).
STATUS_TARGET = 1.3
READY_TARGET = 1.5


class NotifySocket:
    """A bound sd_notify socket (what systemd gives a Type=notify service), timestamping READY=1."""

    def __init__(self, path: str) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.ready: asyncio.Queue[float] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            if b"READY=1" in data.split(b"\n"):
                self.ready.put_nowait(time.perf_counter())

    def drain(self) -> None:
        while not self.ready.empty():
            self.ready.get_nowait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


ROOT = Path(__file__).resolve().parent.parent


class Installed:
    """mncd installed from a wheel into a virtual environment in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.python = directory / "venv" / "bin" / "python"
        self.mncctl = directory / "venv" / "bin" / "mncctl"

    def install(self) -> Installed:
        dist = self.dir / "dist"
        venv = self.dir / "venv"
        _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--wheel-dir", str(dist), str(ROOT))  # fmt: skip
        # As scripts/setup makes it: Debian's pyscard and systemd-python are seen from there.
        _run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv))
        site = Path(
            subprocess.check_output(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                text=True,
            ).strip()
        )
        # The dependencies, from this environment (its .pth files, among them the editable
        # install's import hook, are not read from a directory named in a .pth file).
        here = sysconfig.get_path("purelib")
        (site / "dependencies.pth").write_text(f"{here}\n", encoding="utf-8")
        _run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
             *map(str, dist.glob("mncd-*.whl")))  # fmt: skip
        # The console script, as pip writes it into an environment's bin/.
        self.mncctl.write_text(
            f"#!{self.python}\nimport sys\nfrom mncd.cli.main import main\nsys.exit(main())\n",
            encoding="utf-8",
        )
        self.mncctl.chmod(0o755)
        origin = subprocess.check_output(
            [str(self.python), "-c", "import mncd; print(mncd.__file__)"], text=True, cwd=self.dir
        )
        if not origin.startswith(str(site)):
            raise RuntimeError(f"the installed copy imports mncd from {origin.strip()}")
        return self

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for a process that reads compiled bytecode, as an installed mncd does."""
        out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        out["PYTHONPYCACHEPREFIX"] = str(self.dir / "pycache")
        return out


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {done.stderr[-600:]}")


async def _start_once(
    cmd: list[str],
    env: dict[str, str],
    names: NameWatch,
    name: str,
    notify: NotifySocket,
    log_path: Path,
    cwd: Path,
) -> tuple[float, float]:
    """Start ``cmd``; ms until it owns ``name`` and until READY=1; then stop it."""
    names.forget(name)
    notify.drain()
    with log_path.open("ab") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        owned = await names.wait(name, timeout=30)
        ready = await asyncio.wait_for(notify.ready.get(), 30)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return (owned - start) * 1000, (ready - start) * 1000


async def measure(
    stack: Stack, copy: Installed, runs: int, log: Callable[[str], None]
) -> list[Row]:
    """Cold start rows: a separate private bus, the card in the reader, a fresh state dir."""
    directory = stack.dir / "coldbus"
    directory.mkdir()
    session = PrivateSessionBus(directory)
    client = await connect(session.address)
    names = await NameWatch(client).start()
    notify = NotifySocket(str(stack.dir / "notify.sock"))
    env = {**copy.env(stack.child_env(session.address)), "NOTIFY_SOCKET": notify.path}
    python = str(copy.python)
    times: dict[str, list[tuple[float, float]]] = {"mncd": [], "trivial": []}
    try:
        for n in range(runs + 1):  # the first round warms the page cache and is not counted
            state = {"XDG_STATE_HOME": str(stack.dir / f"cold-state-{n}")}
            mncd = await _start_once(
                [python, "-m", "mncd.daemon"], {**env, **state}, names, BUS_NAME, notify,
                directory / "mncd.log", copy.dir,
            )  # fmt: skip
            trivial = await _start_once(
                [python, "-c", TRIVIAL], env, names, TRIVIAL_NAME, notify,
                directory / "trivial.log", copy.dir,
            )  # fmt: skip
            if n:
                times["mncd"].append(mncd)
                times["trivial"].append(trivial)
    finally:
        notify.close()
        await client.close()
        session.stop()
    log(f"cold start: mncd {times['mncd']}, trivial {times['trivial']}")
    rows = []
    for index, what, target in (
        (0, "bus name owned", None),
        (1, "READY=1 on NOTIFY_SOCKET", READY_TARGET),
    ):
        mine = [t[index] for t in times["mncd"]]
        base = [t[index] for t in times["trivial"]]
        rows.append(
            Row("startup", f"cold start → {what}", "", "ms", median(mine), median(base),
                "trivial python: dbus-next + name", target=target,
                note="card in the reader, empty cache, bytecode compiled",
                samples={"mncd": summary(mine), "baseline": summary(base)})
        )  # fmt: skip
    return rows


async def _run_once(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """ms from spawning ``cmd`` to its exit (it must succeed)."""
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    took = (time.perf_counter() - start) * 1000
    if process.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({process.returncode}): {err.decode()[-400:]}")
    return took


async def status_command(
    stack: Stack, copy: Installed, runs: int, log: Callable[[str], None]
) -> list[Row]:
    """``mncctl status`` as a whole process against a minimal script making the same call,
    alternating, on the running daemon (the card in the reader, its status read)."""
    env = copy.env(stack.child_env())
    mncctl = [str(copy.mncctl), "status"]
    minimal = [str(copy.python), "-c", MINIMAL_STATUS]
    mine: list[float] = []
    base: list[float] = []
    for n in range(runs + 1):  # the first round warms the page cache and is not counted
        took_mine = await _run_once(mncctl, env, copy.dir)
        took_base = await _run_once(minimal, env, copy.dir)
        if n:
            mine.append(took_mine)
            base.append(took_base)
    log(f"mncctl status: {mine}, minimal client: {base}")
    return [
        Row("startup", "mncctl status (whole process)", "", "ms", median(mine), median(base),
            "minimal dbus-next script, same call", target=STATUS_TARGET,
            note="daemon running, card read, bytecode compiled",
            samples={"mncd": summary(mine), "baseline": summary(base)})
    ]  # fmt: skip
