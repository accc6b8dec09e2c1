"""``--profile``: sample the daemon with py-spy while 8 clients call GetStatus.

py-spy is not a dependency of mncd: ``.venv/bin/pip install py-spy``. The raw (collapsed) stacks
are kept for flame-graph tools; the summary lists where the daemon's busy time goes.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mncd.client import MyNumberCard

from .stack import Stack, connect

_LINE_NUMBER = re.compile(r":\d+\)$")
#: The event loop's and the interpreter's scaffolding, in every sample: not listed.
_SCAFFOLDING = ("(asyncio/runners.py)", "(asyncio/base_events.py)", "(<frozen runpy>)",
                "(mncd/daemon.py)", "Handle._run (asyncio/events.py)")  # fmt: skip


def find_py_spy() -> str | None:
    """py-spy beside this Python (the venv) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize(collapsed: Path, top: int = 20) -> list[tuple[float, float, str]]:
    """(inclusive %, self %, function) for the busiest functions, from py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        if not any(f.startswith("BaseEventLoop._run_once") for f in frames):
            continue  # another thread than the event loop's
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return []
    ranked = [(n, f) for f, n in inclusive.most_common() if not f.endswith(_SCAFFOLDING)]
    return [(100 * n / total, 100 * own[f] / total, f) for n, f in ranked[:top]]


async def getstatus(
    stack: Stack, out_dir: Path, seconds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Record the daemon for ``seconds`` under GetStatus load; the summary (also on disk)."""
    spy = find_py_spy()
    if spy is None:
        log("--profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return {}
    assert stack.daemon is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "getstatus-profile.collapsed"
    conns = [await connect(stack.address) for _ in range(8)]
    record = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(stack.daemon.pid), "--rate", "500",
        "--duration", str(seconds), "--format", "raw", "--output", str(raw), "--nonblocking",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    calls = 0

    async def load(client: MyNumberCard) -> None:
        nonlocal calls
        while record.returncode is None:
            await client.call("GetStatus", timeout=None)  # as the latency benchmark calls it
            calls += 1

    try:
        tasks = [asyncio.ensure_future(load(client)) for client in conns]
        _, err = await record.communicate()
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(client.close() for client in conns), return_exceptions=True)
    if record.returncode != 0 or not raw.exists():
        log(f"--profile: py-spy failed: {err.decode(errors='replace').strip()[-300:]}")
        return {}
    rows = summarize(raw)
    text = ["inclusive%  self%  function (busy samples of mncd's event loop, GetStatus load)"]
    text += [f"{inc:9.1f}  {own:5.1f}  {name}" for inc, own, name in rows]
    (out_dir / "getstatus-profile.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    log(f"profile of {calls} GetStatus calls written to {raw.parent}/getstatus-profile.*")
    for line in text[:16]:
        log("  " + line)
    return {"calls": calls, "collapsed": str(raw), "top": rows}
