"""GetStatus latency under concurrency against the bus floor (Peer.Ping), CPU per call, and RSS."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mncd.client import MyNumberCard

from .stack import Stack, connect, rss_kib
from .stats import Row, percentile, summary

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


Caller = Callable[[MyNumberCard], Awaitable[object]]


@dataclass
class BusConfig:
    """How many calls each client makes, per concurrency level; rounds of A B B A."""

    calls: dict[int, int]
    rounds: int
    rss_calls: int


async def _run_clients(clients: list[MyNumberCard], calls: int, caller: Caller) -> list[float]:
    """Every client makes ``calls`` sequential calls, all clients at once; latencies in ms."""
    latencies: list[float] = []

    async def run(client: MyNumberCard) -> None:
        for _ in range(calls):
            start = time.perf_counter()
            await caller(client)
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(run(client) for client in clients))
    return latencies


async def measure(stack: Stack, config: BusConfig, log: Callable[[str], None]) -> list[Row]:
    """The rows of section 1 (latency) and section 5's RSS rows."""
    assert stack.daemon is not None and stack.session is not None
    unique = await stack.unique_name()
    pid = stack.daemon.pid
    bus_pid = stack.session.process.pid

    # Both through MyNumberCard.call, untyped and without a timeout: the same client path, so
    # the ratio is the daemon's work against the bus's alone (get_status() would add parsing).
    async def ping(client: MyNumberCard) -> object:
        peer = "org.freedesktop.DBus.Peer"
        return await client.call("Ping", interface=peer, destination=unique, timeout=None)

    async def get_status(client: MyNumberCard) -> object:
        return await client.call("GetStatus", timeout=None)

    callers = {"Ping": ping, "GetStatus": get_status}
    most = max(config.calls)
    conns = [await connect(stack.address) for _ in range(most)]
    rows: list[Row] = []
    try:
        # -- RSS: idle, then after rss_calls GetStatus calls (8 clients) ---------------------
        idle = rss_kib(pid)
        first = max(1, config.rss_calls // 10)
        await _run_clients(conns[:8], first // 8, get_status)
        after_first = rss_kib(pid)
        await _run_clients(conns[:8], (config.rss_calls - first) // 8, get_status)
        after_all = rss_kib(pid)
        log(f"RSS idle {idle} KiB, after {first} calls {after_first}, after all {after_all}")
        rows.append(
            Row("rss", f"RSS after {config.rss_calls:,} GetStatus calls", "", "MiB",
                after_all / 1024, idle / 1024, "idle RSS", 1.10,
                note="flat = no leak (VmRSS of the daemon)",
                samples={"idle_kib": idle, "after_first_kib": after_first,
                         "first_calls": first, "after_all_kib": after_all})
        )  # fmt: skip
        rows.append(
            Row("rss", f"RSS growth over the last {config.rss_calls - first:,} calls", "", "MiB",
                after_all / 1024, after_first / 1024, f"RSS after the first {first:,} calls",
                1.05, note="warm-up excluded: growth here would be a leak")
        )  # fmt: skip

        # -- latency, A B B A rounds ---------------------------------------------------------
        latencies: dict[tuple[str, int], list[float]] = {}
        cpu: dict[str, dict[str, float]] = {m: {"mncd": 0.0, "bus": 0.0, "client": 0.0, "n": 0}
                                            for m in callers}  # fmt: skip
        await _run_clients(conns, 5, ping)  # warm every connection
        await _run_clients(conns, 5, get_status)
        order = ["Ping", "GetStatus", "GetStatus", "Ping"] * config.rounds
        for clients, calls in config.calls.items():
            for member in order:
                before = (cpu_seconds(pid), cpu_seconds(bus_pid), time.process_time())
                got = await _run_clients(conns[:clients], calls, callers[member])
                after = (cpu_seconds(pid), cpu_seconds(bus_pid), time.process_time())
                latencies.setdefault((member, clients), []).extend(got)
                spent = cpu[member]
                spent["mncd"] += after[0] - before[0]
                spent["bus"] += after[1] - before[1]
                spent["client"] += after[2] - before[2]
                spent["n"] += len(got)
            log(
                f"{clients:>2} clients: GetStatus p50 "
                f"{percentile(latencies['GetStatus', clients], 50):.3f} ms, Ping p50 "
                f"{percentile(latencies['Ping', clients], 50):.3f} ms"
            )
        for clients in config.calls:
            status, floor = latencies["GetStatus", clients], latencies["Ping", clients]
            plural = "client" if clients == 1 else "clients"
            samples = {"GetStatus": summary(status), "Ping": summary(floor)}
            for pct, target in ((50, 1.5), (99, None)):
                rows.append(
                    Row("getstatus", f"GetStatus p{pct}, {clients} {plural}", "", "ms",
                        percentile(status, pct), percentile(floor, pct), f"Peer.Ping p{pct}",
                        target, samples=samples)
                )  # fmt: skip
        for who, label in (("mncd", "mncd CPU"), ("client", "client CPU (dbus-next)"),
                           ("bus", "dbus-daemon CPU")):  # fmt: skip
            per = {m: cpu[m][who] / cpu[m]["n"] * 1e6 for m in callers}
            rows.append(
                Row("getstatus", f"{label} per GetStatus", "", "µs", per["GetStatus"],
                    per["Ping"], f"{label} per Ping", note="all latency phases together")
            )  # fmt: skip
    finally:
        await asyncio.gather(*(client.close() for client in conns), return_exceptions=True)
    return rows
