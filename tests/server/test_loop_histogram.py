"""The lock-free hot-path histogram exports what prometheus_client's Histogram would."""

from __future__ import annotations

import random
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.loop_histogram import LoopHistogram
from server.metrics import CoreMetrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NAME = "scriptgen_test_gap_seconds"


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every `_bucket`, `_count` and `_sum` sample of the exposition, by name and labels."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_count", "_sum")):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_exposition_equals_a_prometheus_client_histogram_fed_the_same() -> None:
    rng = random.Random(7)
    reference, ours = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram(NAME, "gaps", ["stage"], buckets=BUCKETS, registry=reference)
    mine = LoopHistogram(NAME, "gaps", ["stage"], buckets=BUCKETS, registry=ours)
    # On the bounds, between them, below the first and past the last: each side of `<=`.
    values = [*BUCKETS, 0.0, 7.5, *(rng.uniform(0, 6) for _ in range(500))]
    values += [rng.choice(BUCKETS) for _ in range(50)]
    for stage in ("plan", "write"):
        for value in values if stage == "write" else values[:40]:
            theirs.labels(stage).observe(value)
            mine.labels(stage).observe(value)

    expected, found = _samples(reference), _samples(ours)
    assert found.keys() == expected.keys()
    assert len(found) == 2 * (len(BUCKETS) + 3)  # + Inf bucket, count and sum per stage
    for key, value in expected.items():
        assert found[key] == pytest.approx(value), key
    assert found[(NAME + "_count", (("stage", "write"),))] == len(values)
    assert found[(NAME + "_bucket", (("le", "0.001"), ("stage", "plan")))] == 2  # 0.001 and 0.0


def test_bad_definitions_and_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="ascending"):
        LoopHistogram(NAME, "gaps", [], buckets=(0.5, 0.1), registry=CollectorRegistry())
    with pytest.raises(ValueError, match="ascending"):
        LoopHistogram(NAME, "gaps", [], buckets=(), registry=CollectorRegistry())
    histogram = LoopHistogram(
        NAME, "gaps", ["stage"], buckets=BUCKETS, registry=CollectorRegistry()
    )
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("write", "extra")
    registry = CollectorRegistry()
    LoopHistogram(NAME, "gaps", [], buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Histogram(NAME, "gaps", buckets=BUCKETS, registry=registry)


def test_a_scrape_while_observing_never_counts_in_the_sum_what_the_buckets_miss() -> None:
    """Each observation is 1.0, so the sum is the count of the observations it covers."""
    registry = CollectorRegistry()
    child = LoopHistogram(NAME, "gaps", [], buckets=BUCKETS, registry=registry).labels()
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            child.observe(1.0)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # the observer runs between any two steps of a scrape
    observer = threading.Thread(target=observe)
    observer.start()
    try:
        previous = 0.0
        for _ in range(3000):
            found = _samples(registry)
            count = found[(NAME + "_count", ())]
            assert found[(NAME + "_sum", ())] <= count
            assert found[(NAME + "_bucket", (("le", "1.0"),))] == count  # 1.0 is on a bound
            assert count >= previous
            previous = count
    finally:
        stop.set()
        observer.join()
        sys.setswitchinterval(switch)
    assert previous > 0


def test_the_inter_token_clock_observes_the_gaps_between_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = CoreMetrics()
    now = [0.0]
    monkeypatch.setattr("server.metrics.time.monotonic", lambda: now[0])
    tick = metrics.inter_token_clock("write")
    # The first tick only starts the clock. Gaps of 1.0 and 2.5 are exact and sit on bounds:
    # each counts in the bucket it bounds (`le`), not the next.
    for at in (0.0, 1.0, 3.5, 3.503, 12.503):
        now[0] = at
        tick()
    other = metrics.inter_token_clock("write")  # a second stream: its own clock
    other()
    found = _samples(metrics.registry)
    name = "scriptgen_inter_token_latency_seconds"

    def bucket(bound: str) -> float:
        return found[(name + "_bucket", (("le", bound), ("stage", "write")))]

    assert found[(name + "_count", (("stage", "write"),))] == 4
    assert found[(name + "_sum", (("stage", "write"),))] == pytest.approx(12.503)
    assert bucket("0.001") == 0
    assert bucket("0.005") == 1  # 0.003
    assert bucket("0.5") == 1
    assert bucket("1.0") == 2  # 1.0: on the bound
    assert bucket("2.5") == 3  # 2.5: on the bound
    assert bucket("5.0") == 3
    assert bucket("+Inf") == 4  # 9.0
