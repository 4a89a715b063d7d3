"""scripts/sse_client_costs.py runs end to end and prints a figure per client."""

from __future__ import annotations

import re

from tests.perf._scripts import run_script


def test_the_script_prints_cpu_per_stream_for_both_clients() -> None:
    printed = run_script("sse_client_costs.py", "--streams", "20", "--runs", "2")
    figures = re.findall(
        r"^(.+?)\s+µs CPU per stream: median (\d+) \((\d+) (\d+)\)$", printed, re.M
    )
    assert [name.strip() for name, *_ in figures] == [
        "aiohttp client session",
        "the load tool's client",
    ], printed
    assert all(int(value) > 0 for _, *values in figures for value in values)
