"""Command line and orchestration: sets the stack up, runs every measurement, reports."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import bus, cards, profiling, startup
from . import documents as document_bench
from .stack import SPEEDS, Stack
from .stats import Row, table, write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
#: What ``--only`` can choose: the bus (GetStatus, RSS), the card operations (Sign, Authenticate,
#: OpenSC, APDUs, insertion), signed documents, and start-up.
PARTS = ("bus", "cards", "documents", "startup")
SECTIONS = ("getstatus", "sign", "documents", "opensc", "apdus", "insertion", "startup", "rss")

#: Iterations: the full run stays well under 5 minutes, --quick near 1 minute.
FULL = {
    "bus": bus.BusConfig(calls={1: 1000, 8: 150, 64: 25}, rounds=1, rss_calls=10_000),
    "cards": {
        "fast": cards.CardConfig(insertions=8, signatures=40, processes=10, raw_reads=6),
        "contact": cards.CardConfig(insertions=6, signatures=10, processes=5, raw_reads=4),
        "contactless": cards.CardConfig(insertions=4, signatures=6, processes=3, raw_reads=3),
    },
    "cold_starts": 8,
    "client_starts": 20,
    "documents_rounds": 3,
}
QUICK = {
    "bus": bus.BusConfig(calls={1: 300, 8: 40, 64: 6}, rounds=1, rss_calls=10_000),
    "cards": {
        "fast": cards.CardConfig(insertions=3, signatures=10, processes=3, raw_reads=3),
        "contact": cards.CardConfig(insertions=2, signatures=3, processes=2, raw_reads=2),
        "contactless": cards.CardConfig(insertions=2, signatures=2, processes=2, raw_reads=2),
    },
    "cold_starts": 3,
    "client_starts": 6,
    "documents_rounds": 2,
}


def _command_output(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kib = 0
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
    opensc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "opensc"], capture_output=True, text=True
    ).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pcscd": _command_output("pcscd", "--version"),
        "dbus": _command_output("dbus-daemon", "--version"),
        "opensc": opensc,
    }


def _ordered(rows: list[Row], speeds: list[str]) -> list[Row]:
    """Rows by section, then by operation as first seen, then by card speed."""
    first_seen: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        first_seen.setdefault((row.operation, row.baseline_name), index)
    return sorted(
        rows,
        key=lambda r: (
            SECTIONS.index(r.section),
            first_seen[r.operation, r.baseline_name],
            speeds.index(r.card) if r.card in speeds else -1,
        ),
    )


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = QUICK if args.quick else FULL
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    speeds = [SPEEDS[name] for name in args.cards]
    stack = Stack(workdir)
    rows: list[Row] = []
    card_bench: cards.CardBench | None = None
    profiled: dict[str, Any] = {}
    try:
        await stack.start()
        await stack.insert(speeds[0])
        took = await stack.start_daemon()
        await stack.wait_card_read()
        log(f"stack up: pcscd + vpcd + card, bus, mncd (name owned after {took * 1000:.0f} ms)")
        await asyncio.sleep(0.5)  # let the daemon settle before its idle RSS is read
        if "bus" in args.only:
            rows += await bus.measure(stack, config["bus"], log)
        if args.profile:
            profiled = await profiling.getstatus(stack, args.json.parent, args.profile, log)
        if "cards" in args.only:
            card_bench = await cards.CardBench(stack, log).start()
        for n, speed in enumerate(speeds):
            log(f"card speed {speed.name}: {speed.note}")
            if card_bench is not None:
                card_config = config["cards"][speed.name]
                rows += await card_bench.measure(speed, card_config, counts=n == 0)
            if "documents" in args.only:
                rows += await document_bench.measure(stack, speed, config["documents_rounds"], log)
        if "startup" in args.only:
            copy = startup.Installed(workdir / "installed")
            await asyncio.get_running_loop().run_in_executor(None, copy.install)
            log("mncd installed from a wheel for the start-up rows")
            rows += await startup.status_command(stack, copy, config["client_starts"], log)
            rows += await startup.measure(stack, copy, config["cold_starts"], log)
    finally:
        if card_bench is not None:
            card_bench.close()
        await stack.stop()
    duration = time.perf_counter() - began
    log(f"done in {duration:.0f} s")
    rows = _ordered(rows, [s.name for s in speeds])
    return {
        "format": 1,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "parts": list(args.only),
        "duration_s": round(duration, 1),
        "machine": machine(),
        "cards": {s.name: dataclasses.asdict(s) for s in speeds},
        "apdus": card_bench.apdus if card_bench else {},
        "profile": profiled,
        "rows": [row.to_json() for row in rows],
        "_rows": rows,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark mncd on the real stack; every figure is a ratio against a "
        "baseline measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
        help=f"where to write the results (default: {DEFAULT_JSON.relative_to(Path.cwd())})"
        if DEFAULT_JSON.is_relative_to(Path.cwd()) else "where to write the results",
    )  # fmt: skip
    parser.add_argument(
        "--cards", default="fast,contact", metavar="SPEEDS",
        help=f"card speeds, comma-separated, from {', '.join(SPEEDS)} (default: fast,contact)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=int, nargs="?", const=5, default=0, metavar="SECONDS",
        help="also sample the daemon with py-spy under GetStatus load (default 5 s); "
        "writes getstatus-profile.* beside the JSON",
    )  # fmt: skip
    parser.add_argument(
        "--only", default=",".join(PARTS), metavar="PARTS",
        help=f"what to run, comma-separated, from {', '.join(PARTS)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.cards = [name.strip() for name in args.cards.split(",") if name.strip()]
    unknown = [name for name in args.cards if name not in SPEEDS]
    if unknown or not args.cards:
        parser.error(f"unknown card speed(s) {', '.join(unknown)}; choose from {', '.join(SPEEDS)}")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in PARTS]
    if unknown or not args.only:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mncd-bench-"))
    try:
        document = asyncio.run(run(args, workdir))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows: list[Row] = document.pop("_rows")
    info = document["machine"]
    print(
        f"mncd benchmark ({document['mode']}, {document['duration_s']:.0f} s) on {info['cpu']}, "
        f"{info['cores']} cores, {info['ram_gib']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}"
    )
    print("ratio = mncd / baseline; cards: " + ", ".join(
        f"{name} ({c['apdu_delay_ms']:g} ms/APDU, {c['sign_delay_ms']:g} ms/signature)"
        for name, c in document["cards"].items()
    ))  # fmt: skip
    print()
    print(table(rows, markdown=args.markdown))
    judged = [row for row in rows if row.met is not None]
    missed = [row for row in judged if not row.met]
    print()
    print(f"targets met: {len(judged) - len(missed)} of {len(judged)}")
    for row in missed:
        print(f"  not met: {row.operation} [{row.card or '-'}] ratio {row.ratio:.2f}, "
              f"target {row.target_text}")  # fmt: skip
    write_json(args.json, document)
    print(f"results written to {args.json}")
    return 0
