"""Samples, result rows, the printed table and the JSON document."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``samples``."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Count, min, p50, p99, max and mean of ``samples``."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


@dataclass
class Row:
    """One line of the table: a figure of mncd against a baseline measured in the same run.

    ``ratio`` is always mncd / baseline; ``target`` is a bound on the ratio (``le``: at most,
    ``ge``: at least), or None for figures reported without a target.
    """

    section: str
    operation: str
    card: str
    unit: str
    mncd: float
    baseline: float
    baseline_name: str
    target: float | None = None
    direction: str = "le"
    note: str = ""
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return math.inf if self.mncd else 1.0
        return self.mncd / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or math.isnan(self.ratio):
            return None
        return self.ratio <= self.target if self.direction == "le" else self.ratio >= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'≤' if self.direction == 'le' else '≥'} {self.target:.3g}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, met=self.met, target_text=self.target_text)
        return data


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "APDUs":
        return f"{value:g}"
    if value >= 100:
        return f"{value:.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The rows as an aligned text table (or a Markdown table)."""
    header = ["operation", "card", "mncd", "baseline", "baseline is", "ratio", "target", "met?"]
    lines = [header]
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        ratio = "n/a" if math.isnan(row.ratio) else f"{row.ratio:.2f}"
        lines.append(
            [
                row.operation,
                row.card or "-",
                _number(row.mncd, row.unit),
                _number(row.baseline, row.unit),
                row.baseline_name,
                ratio,
                row.target_text,
                met,
            ]
        )
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
        return "\n".join(out)
    widths = [max(len(cells[i]) for cells in lines) for i in range(len(header))]
    right = {2, 3, 5}
    out = []
    for n, cells in enumerate(lines):
        out.append(
            "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
