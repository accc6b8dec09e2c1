"""Load: 100 concurrent clients (``mncd.client``) × 100 calls mixing GetStatus and Authenticate.

Every answer is checked (status fields, signatures verified against the card's certificate);
the card's APDU log shows each Authenticate as one contiguous SELECT AP, SELECT PIN EF, VERIFY,
SELECT key EF, SIGN; and GetStatus keeps answering from memory while card operations queue up.
Latency figures are reported in the summary line; only a generous sanity bound is asserted here
(performance is the benchmark script's business).
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time

import faultstats
import pytest
from faultkit import AUTHENTICATE_APDUS, Stack, operations, verify_rsa

from mncd.client import MyNumberCard, Status

CLIENTS = 100
CALLS = 100
AUTH_EVERY = 10  #: one call in ten is an Authenticate: 1,000 card operations
QUEUE_CLIENTS = 40  #: clients keeping card operations queued while GetStatus is timed
PROBES = 200


@pytest.fixture
def stack(sandbox, tmp_path):
    running = Stack(tmp_path, sandbox.env).start()
    yield running
    log = running.daemon.log
    running.close()
    assert "Traceback" not in log


async def timed_status(card: MyNumberCard, samples: list[float]) -> Status:
    started = time.perf_counter()
    status = await card.get_status()
    samples.append(time.perf_counter() - started)
    return status


async def load(address: str, auth_der: bytes, pin: str) -> dict:
    """Phase 1: GetStatus alone. Phase 2: the mixed load. Phase 3: a queue of card operations
    with GetStatus timed beside it."""
    fingerprint = hashlib.sha256(auth_der).hexdigest()
    wrong: list[str] = []
    idle: list[float] = []
    queued: list[float] = []
    signatures = 0

    def check_status(status: Status) -> None:
        if status.state != "card-present" or status.auth.fingerprint != fingerprint:
            wrong.append(f"status {status.state}")

    async def authenticate(card: MyNumberCard, challenge: bytes) -> None:
        nonlocal signatures
        signed = await card.authenticate(challenge, pin=pin)
        if signed.certificate != auth_der:
            wrong.append("certificate")
        verify_rsa(signed.certificate, signed.signature, challenge)  # raises on a wrong one
        signatures += 1

    async with await MyNumberCard.connect(address) as probe:
        for _ in range(PROBES):
            check_status(await timed_status(probe, idle))

    async def mixed(n: int) -> None:
        async with await MyNumberCard.connect(address) as card:
            for i in range(CALLS):
                try:
                    if (n + i) % AUTH_EVERY == 0:
                        await authenticate(card, f"client {n} call {i}".encode())
                    else:
                        check_status(await card.get_status())
                except Exception as exc:  # a wrong answer, not a crash of the test
                    wrong.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(mixed(n) for n in range(CLIENTS)))
    mixed_seconds = time.perf_counter() - started

    stop = asyncio.Event()

    async def queue_filler(n: int) -> None:
        async with await MyNumberCard.connect(address) as card:
            i = 0
            while not stop.is_set():
                await authenticate(card, f"queue {n} {i}".encode())
                i += 1

    fillers = [asyncio.create_task(queue_filler(n)) for n in range(QUEUE_CLIENTS)]
    await asyncio.sleep(0.5)  # let the queue build up
    async with await MyNumberCard.connect(address) as probe:
        for _ in range(PROBES):
            check_status(await timed_status(probe, queued))
    stop.set()
    await asyncio.gather(*fillers)
    return {
        "wrong": wrong,
        "idle": idle,
        "queued": queued,
        "signatures": signatures,
        "mixed_seconds": mixed_seconds,
    }


def test_concurrent_clients(stack, insert_card):
    card = insert_card(auth_pin="1234")
    stack.wait_state("card-present")
    auth_der = card.certificates()["auth"]
    card.commands(clear=True)
    result = asyncio.run(load(stack.address, auth_der, "1234"))
    calls = CLIENTS * CALLS
    faultstats.add("concurrent_calls", calls)
    faultstats.add("concurrent_failures", len(result["wrong"]))
    assert result["wrong"] == [], result["wrong"][:5]
    # Strictly serialized: the log is nothing but whole Authenticate sequences, one per
    # signature returned, never interleaved.
    sessions = operations(card.commands())
    assert set(sessions) == {AUTHENTICATE_APDUS}
    assert len(sessions) == result["signatures"] >= calls // AUTH_EVERY
    assert card.tries()["auth"] == 3
    faultstats.samples("getstatus_idle", result["idle"])
    faultstats.samples("getstatus_queued", result["queued"])
    idle = statistics.median(result["idle"])
    queued = statistics.median(result["queued"])
    print(
        f"\nGetStatus p50 {idle * 1000:.2f} ms idle, {queued * 1000:.2f} ms with "
        f"{QUEUE_CLIENTS} clients queueing Authenticate; {calls} mixed calls in "
        f"{result['mixed_seconds']:.1f} s; {result['signatures']} signatures verified"
    )
    # Sanity only: a GetStatus that waited behind the card queue would take seconds.
    assert queued < 0.5
