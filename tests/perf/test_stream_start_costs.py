"""scripts/stream_start_costs.py runs end to end against spawned servers and prints
each server's CPU per stream start."""

from __future__ import annotations

import re

from tests.perf._scripts import refusal, run_and_median, run_script

_FIGURE = r"gateway\s+(\d+) µs/stream\s+core\s+(\d+) µs/stream"


def test_the_script_prints_cpu_per_stream_start_for_gateway_and_core() -> None:
    printed = run_script("stream_start_costs.py", "--streams", "20", "--runs", "2", timeout=180)
    runs = re.findall(rf"^run \d+\s+{_FIGURE}\s+TTFE p50\s+\d+ ms\s+p95\s+\d+ ms$", printed, re.M)
    assert len(runs) == 2, printed
    median = re.search(rf"^median\s+{_FIGURE}$", printed, re.M)
    assert median is not None, printed
    assert all(int(value) > 0 for figures in [*runs, median.groups()] for value in figures)


def test_the_floor_is_measured_on_a_bare_aiohttp_server() -> None:
    printed = run_script("stream_start_costs.py", "--floor", "--streams", "20", "--runs", "2")
    run_and_median(printed, "aiohttp", "µs/stream", runs=2)


def test_a_count_below_one_is_refused_by_name() -> None:
    refused = refusal("stream_start_costs.py", "--streams", "0")
    assert "--streams: must be at least 1, not 0" in refused
