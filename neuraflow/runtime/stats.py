"""Metric aggregation without Ray: counters and a fixed-bucket latency histogram.

Workers accumulate into :class:`StreamStats` and ship the deltas once per
report; the controller merges them. Percentiles come from the histogram, so
merging is exact and memory stays constant whatever the rate.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

#: Upper bounds of the latency buckets, milliseconds (last bucket is +inf).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000, 10000,
)


@dataclass
class LatencyHistogram:
    """Counts of latencies per bucket of :data:`LATENCY_BUCKETS_MS`."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def add(self, latency_ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def add_many(self, latencies_ms: np.ndarray) -> None:
        idx = np.searchsorted(LATENCY_BUCKETS_MS, latencies_ms, side="left")
        for i, n in zip(*np.unique(idx, return_counts=True)):
            self.counts[int(i)] += int(n)

    def merge(self, other: LatencyHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]

    @property
    def n(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """Upper bound (ms) of the bucket holding quantile ``q``; ``nan`` when empty."""
        total = self.n
        if total == 0:
            return math.nan
        rank = q * total
        running = 0
        for i, count in enumerate(self.counts):
            running += count
            if running >= rank and count:
                return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else math.inf
        return math.inf


@dataclass
class StreamStats:
    """Counters of one stream (raw or derived) or one step."""

    chunks: int = 0
    samples: int = 0
    drops: int = 0
    shed: int = 0
    errors: int = 0
    reconnects: int = 0
    gaps: int = 0
    queue_depth: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def merge(self, other: StreamStats) -> None:
        for name in ("chunks", "samples", "drops", "shed", "errors", "reconnects", "gaps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.queue_depth = other.queue_depth
        self.latency.merge(other.latency)

    def summary(self, elapsed_s: float) -> dict[str, float]:
        rate = 1.0 / elapsed_s if elapsed_s > 0 else 0.0
        return {
            "chunks": self.chunks,
            "samples": self.samples,
            "chunks_per_s": self.chunks * rate,
            "samples_per_s": self.samples * rate,
            "drops": self.drops,
            "shed": self.shed,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "queue_depth": self.queue_depth,
            "latency_p50_ms": self.latency.quantile(0.5),
            "latency_p99_ms": self.latency.quantile(0.99),
            "latency_count": self.latency.n,
        }
