"""Distributions and timelines from stream records.

Inter-token latency: for every TextDelta after a stream's first, the gap
since the previous delta divided by the tokens it carries, counted once per
token (a delta of 3 tokens 90 ms after the last one gives three 30 ms
samples). Deltas read in one network read share a time, so coalescing by the
server or the network shows as short gaps followed by one long one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from scriptgen.loadtest._records import StreamRecord


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of samples; zeros when there are none."""

    count: int = 0
    mean: float = 0.0
    min: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    def scaled(self, factor: float) -> dict[str, float | int]:
        """As a JSON object, every figure but `count` multiplied by `factor` (e.g. s → ms)."""
        return {
            name: value if name == "count" else round(value * factor, 3)
            for name, value in asdict(self).items()
        }


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted `ordered` (not empty)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def distribution(samples: Iterable[float]) -> Distribution:
    ordered = sorted(samples)
    if not ordered:
        return Distribution()
    return Distribution(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        p50=percentile(ordered, 0.50),
        p95=percentile(ordered, 0.95),
        p99=percentile(ordered, 0.99),
        max=ordered[-1],
    )


def inter_token_latencies(record: StreamRecord) -> list[float]:
    """Per-token gaps of one stream, in seconds (see the module docstring)."""
    samples: list[float] = []
    times = record.delta_times
    tokens = record.delta_tokens
    for i in range(1, len(times)):
        count = tokens[i]
        if count:
            gap = (times[i] - times[i - 1]) / count
            samples.extend([gap] * count)
    return samples


def longest_gap(record: StreamRecord) -> float | None:
    """A stream's longest wait between two deltas, in seconds (None with fewer than 2): a
    stall that the per-token latency spreads over the tokens of the delta that ends it."""
    times = record.delta_times
    if len(times) < 2:
        return None
    return max(times[i] - times[i - 1] for i in range(1, len(times)))


def stream_rate(record: StreamRecord) -> float | None:
    """Tokens per second between a stream's first and last delta (None with fewer than 2)."""
    if len(record.delta_times) < 2:
        return None
    span = record.delta_times[-1] - record.delta_times[0]
    if span <= 0:
        return None
    return (record.tokens - record.delta_tokens[0]) / span


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One bucket of the run: seconds since the start, tokens/s, events/s, open streams."""

    time: float
    tokens_per_second: float
    deltas_per_second: float
    open_streams: int


def timeline(records: Sequence[StreamRecord], start: float, end: float) -> list[TimelinePoint]:
    """Throughput and open streams over the run, in buckets of 1 s (0.25 s for short runs)."""
    span = max(0.0, end - start)
    width = 1.0 if span >= 20 else 0.25
    buckets = max(1, math.ceil(span / width))
    tokens = [0] * buckets
    deltas = [0] * buckets
    opened = [0] * (buckets + 1)
    for record in records:
        for moment, count in zip(record.delta_times, record.delta_tokens, strict=True):
            slot = min(buckets - 1, max(0, int((moment - start) / width)))
            tokens[slot] += count
            deltas[slot] += 1
        if record.sent is not None:
            first = min(buckets, max(0, int((record.sent - start) / width)))
            last = record.ended if record.ended is not None else end
            stop = min(buckets, max(first, int((last - start) / width) + 1))
            opened[first] += 1
            opened[stop] -= 1
    points = []
    running = 0
    for slot in range(buckets):
        running += opened[slot]
        points.append(
            TimelinePoint(
                time=round(slot * width, 3),
                tokens_per_second=tokens[slot] / width,
                deltas_per_second=deltas[slot] / width,
                open_streams=running,
            )
        )
    return points
