"""scripts/hot_path_costs.py measures the write stage's per-chunk path and prints its figure."""

from __future__ import annotations

import re

from tests.perf._scripts import run_script


def test_the_write_chunks_measure_prints_cpu_per_chunk() -> None:
    printed = run_script("hot_path_costs.py", "--only", "write-chunks", "--runs", "2")
    found = re.search(
        r"^write-chunks: µs CPU per chunk, .*: median ([\d.]+) \(([\d.]+) ([\d.]+)\)$",
        printed,
        re.M,
    )
    assert found, printed
    # Every run checked its streams' chunks against the writer's text, and one chunk costs
    # microseconds: a figure of 0 or of milliseconds would be a broken measure.
    for figure in found.groups():
        assert 0.1 < float(figure) < 1000, printed
