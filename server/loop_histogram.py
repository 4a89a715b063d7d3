"""A Prometheus histogram for the streaming hot path: observed on one thread, without locks.

prometheus_client's `Histogram.observe` takes a lock for its sum and another for the
bucket, and walks the bounds in Python: ~1 µs per observation. The write stage
observes the gap before every piece of text a model hands over, and a model hands
over one token per piece: that microsecond was a fifth of the core's CPU per token
of the token-per-chunk peak relay (BENCHMARKS.md, session 24).

Observations made only on the event loop's thread need no lock. `LoopHistogram`
keeps plain counts per label value and is its own collector: a scrape, from any
thread, exports them as an ordinary histogram family (the same name, help, buckets
and labels as a prometheus_client `Histogram`, without its `_created` series).
Counts only grow, and a scrape copies a child's counts in one step under the GIL, so
its buckets are of one instant. It reads the sum before that copy, and an observation
adds to its bucket before the sum, so the sum never covers an observation the counts
miss; it may miss the ones made between the two reads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: A bound as prometheus_client writes it in `le` (typed here: the library's is not).
_bound_label: Callable[[float], str] = floatToGoString


class LoopHistogramChild:
    """The counts of one label value: observe only from the thread that owns it."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        #: The buckets' upper bounds, ascending, without +Inf.
        self.bounds = bounds
        #: Observations per bucket, not cumulative; the last is above every bound (+Inf).
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count `amount` in the first bucket whose bound is at least `amount`."""
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class LoopHistogram(Collector):
    """A histogram family whose children are `LoopHistogramChild`, registered in `registry`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets if bound != float("inf"))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("buckets must be distinct bounds in ascending order")
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = bounds
        self._children: dict[tuple[str, ...], LoopHistogramChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> LoopHistogramChild:
        """The child of these label values (made on first use)."""
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = LoopHistogramChild(self._bounds)
        return child

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        names = [_bound_label(bound) for bound in self._bounds] + ["+Inf"]
        for values, child in list(self._children.items()):
            observed = child.sum  # before the counts: see the module docstring
            counts = child.counts.copy()  # one step under the GIL: every bucket as of now
            total = 0.0
            cumulative: list[tuple[str, float]] = []
            for name, count in zip(names, counts, strict=True):
                total += count
                cumulative.append((name, total))
            family.add_metric(list(values), cumulative, observed)
        yield family
