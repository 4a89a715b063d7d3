"""scripts/stream_start_costs.py runs end to end against spawned servers and prints
each server's CPU per stream start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "stream_start_costs.py"
_FIGURE = r"gateway\s+(\d+) µs/stream\s+core\s+(\d+) µs/stream"


def test_the_script_prints_cpu_per_stream_start_for_gateway_and_core() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--streams", "20", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    runs = re.findall(
        rf"^run \d+\s+{_FIGURE}\s+TTFE p50\s+\d+ ms\s+p95\s+\d+ ms$", done.stdout, re.M
    )
    assert len(runs) == 2, done.stdout
    median = re.search(rf"^median\s+{_FIGURE}$", done.stdout, re.M)
    assert median is not None, done.stdout
    assert all(int(value) > 0 for figures in [*runs, median.groups()] for value in figures)


def test_the_floor_is_measured_on_a_bare_aiohttp_server() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--floor", "--streams", "20", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    runs = re.findall(r"^run \d+\s+aiohttp\s+(\d+) µs/stream$", done.stdout, re.M)
    median = re.search(r"^median\s+aiohttp\s+(\d+) µs/stream$", done.stdout, re.M)
    assert len(runs) == 2 and median is not None, done.stdout
    assert all(int(value) > 0 for value in [*runs, median.group(1)])
