"""Shared benchmark helpers: percentiles and a node started for the duration of a benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 50):.3f} ms, p99 {percentile(ms, 99):.3f} ms, mean {statistics.fmean(ms):.3f} ms "
            f"(n={len(ms)})")
