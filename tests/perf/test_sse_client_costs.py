"""scripts/sse_client_costs.py runs end to end and prints a figure per client."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "sse_client_costs.py"


def test_the_script_prints_cpu_per_stream_for_both_clients() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--streams", "20", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = re.findall(
        r"^(.+?)\s+µs CPU per stream: median (\d+) \((\d+) (\d+)\)$", done.stdout, re.M
    )
    assert [name.strip() for name, *_ in figures] == [
        "aiohttp client session",
        "the load tool's client",
    ], done.stdout
    assert all(int(value) > 0 for _, *values in figures for value in values)
