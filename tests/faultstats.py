"""Figures of the fault suite, gathered while it runs and printed as one line at the end.

Tests add to the counters only after they have checked the outcome, so "survived" and
"rejected" mean what the tests proved. ``conftest.py`` prints :func:`summary_line` from
``pytest_terminal_summary``.
"""

from __future__ import annotations

import statistics
from collections import Counter

COUNTS: Counter[str] = Counter()
#: Latency samples (seconds) by name, e.g. GetStatus idle and with a queue of card operations.
SAMPLES: dict[str, list[float]] = {}


def add(name: str, n: int = 1) -> None:
    """Add ``n`` to counter ``name``."""
    COUNTS[name] += n


def fault(survived: bool = True) -> None:
    """One injected fault, and whether the daemon came through it as specified."""
    add("faults")
    if survived:
        add("faults_survived")


def bad_input(untouched: bool) -> None:
    """One bad input; ``untouched``: refused with a typed error, no APDU reached the card."""
    add("bad_inputs")
    if untouched:
        add("bad_inputs_rejected")


def samples(name: str, values: list[float]) -> None:
    SAMPLES.setdefault(name, []).extend(values)


def p50_ms(name: str) -> float | None:
    values = SAMPLES.get(name)
    return statistics.median(values) * 1000 if values else None


def summary_line() -> str | None:
    """One line of figures, or None when no fault-suite test ran."""
    if not COUNTS and not SAMPLES:
        return None
    c = COUNTS
    parts = [
        f"faults injected {c['faults']} / survived {c['faults_survived']}",
        f"bad inputs {c['bad_inputs']} / rejected without touching the card "
        f"{c['bad_inputs_rejected']}",
        f"concurrent calls {c['concurrent_calls']} / failures {c['concurrent_failures']}",
        f"fuzz cases {c['fuzz_in_process']} in-process + {c['fuzz_stack']} through the stack",
        f"secrets grepped in {c['secret_files']} files + {c['secret_texts']} error texts / "
        f"leaks {c['secret_leaks']}",
        f"PIN paths {c['pin_paths']} / PIN tries spent that the user did not mean "
        f"{c['unmeant_tries']}",
    ]
    idle, queued = p50_ms("getstatus_idle"), p50_ms("getstatus_queued")
    if idle is not None and queued is not None:
        parts.append(f"GetStatus p50 {idle:.1f} ms idle / {queued:.1f} ms behind a card queue")
    return "mncd fault suite: " + "; ".join(parts)
