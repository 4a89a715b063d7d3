"""scripts/hot_path_costs.py measures pieces of the hot path and prints their figures."""

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


def test_the_starts_measure_prints_cpu_per_job_start() -> None:
    printed = run_script("hot_path_costs.py", "--only", "starts", "--runs", "1")
    found = re.search(
        r"^starts: µs CPU per job start, .*: median ([\d.]+) \(([\d.]+)\)$", printed, re.M
    )
    assert found, printed
    # Every start's first response was checked to be its `queued` event; a start costs
    # tens to hundreds of µs.
    for figure in found.groups():
        assert 5 < float(figure) < 20_000, printed
