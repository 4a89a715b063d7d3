"""`make bench`: run the documented load scenarios several times and print their medians.

    python -m scriptgen.loadtest.bench [--runs 3] [--out bench-results] [--only NAME ...]

Each run is `scriptgen loadtest --spawn …` in its own process (fresh servers
every time), writing `NAME-RUN.json` and `NAME-RUN.png` into --out; the table
at the end has the median of each figure over the runs, as in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: The scenarios of BENCHMARKS.md: name → the arguments of `scriptgen loadtest`.
SCENARIOS: dict[str, str] = {
    "sse-single-stream": "--spawn --streams 1 --ttft 0.3 --tokens-per-second 30 --duration 60",
    "sse-1000-at-30": (
        "--spawn --streams 1000 --ttft 0.3 --tokens-per-second 30 --projects 10 --duration 180"
    ),
    "sse-burst-200": (
        "--spawn --streams 200 --ttft 0.3 --tokens-per-second 30 --projects 10 --duration 120"
    ),
    "sse-ramp-1000": (
        "--spawn --streams 1000 --ramp-seconds 30 --ttft 0.3 --tokens-per-second 30"
        " --projects 10 --duration 180"
    ),
    "grpc-1000-at-30": (
        "--spawn --protocol grpc --streams 1000 --ttft 0.3 --tokens-per-second 30 --projects 10"
        " --duration 180"
    ),
    "sse-peak-relay": (
        "--spawn --streams 200 --ttft 0 --tokens-per-second 0 --projects 10 --duration 120"
    ),
    "grpc-peak-relay": (
        "--spawn --protocol grpc --streams 200 --ttft 0 --tokens-per-second 0 --projects 10"
        " --duration 120"
    ),
    "sse-idle-1000": (
        "--spawn --streams 1000 --ttft 120 --hold 20 --ramp-seconds 10 --projects 10 --duration 90"
    ),
}


def _figure(path: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        value: Any = document
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return read


def _process(role: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        values = [p[key] for p in document.get("processes", []) if p["role"] == role and key in p]
        return float(values[0]) if values else None

    return read


def _errors(document: dict[str, Any]) -> float:
    return float(sum(document.get("errors", {}).values()))


#: Columns of the medians table: label → how to read it from a run's JSON.
FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "completed": _figure("outcomes.completed"),
    "cut": _figure("outcomes.cut"),
    "errors": _errors,
    "TTFE p50 ms": _figure("latency_ms.time_to_first_event.p50"),
    "TTFE p99 ms": _figure("latency_ms.time_to_first_event.p99"),
    "TTFT p50 ms": _figure("latency_ms.time_to_first_token.p50"),
    "TTFT p99 ms": _figure("latency_ms.time_to_first_token.p99"),
    "ITL p50 ms": _figure("latency_ms.inter_token_latency.p50"),
    "ITL p95 ms": _figure("latency_ms.inter_token_latency.p95"),
    "ITL p99 ms": _figure("latency_ms.inter_token_latency.p99"),
    "tok/s total": _figure("throughput.delivered_tokens_per_second"),
    "tok/s peak": _figure("throughput.peak_tokens_per_second"),
    "tok/s per stream p50": _figure("throughput.stream_tokens_per_second.p50"),
    "core CPU s": _process("core", "cpu_seconds"),
    "core peak RSS MiB": lambda d: _mib(_process("core", "rss_peak_bytes")(d)),
    "gateway CPU s": _process("gateway", "cpu_seconds"),
    "gateway peak RSS MiB": lambda d: _mib(_process("gateway", "rss_peak_bytes")(d)),
    "core KiB/idle stream": lambda d: _kib(_process("core", "hold_bytes_per_stream")(d)),
    "gateway KiB/idle stream": lambda d: _kib(_process("gateway", "hold_bytes_per_stream")(d)),
}


def _mib(value: float | None) -> float | None:
    return None if value is None else value / (1024 * 1024)


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def medians(documents: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """(median, min, max) of each figure over the runs that have it."""
    table = {}
    for label, read in FIGURES.items():
        values = [v for v in (read(d) for d in documents) if v is not None]
        if values:
            table[label] = (statistics.median(values), min(values), max(values))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scriptgen.loadtest.bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument(
        "--summarize", action="store_true", help="only print the medians of the JSON in --out"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SCENARIOS)
    failed = False
    for name in names:
        documents = []
        for run in range(1, args.runs + 1):
            stem = args.out / f"{name}-{run}"
            if not args.summarize:
                command = [
                    sys.executable,
                    "-m",
                    "scriptgen",
                    "loadtest",
                    *shlex.split(SCENARIOS[name]),
                    "--quiet",
                    f"--json={stem}.json",
                    f"--chart={stem}.png",
                ]
                print(f"== {name} run {run}: scriptgen loadtest {SCENARIOS[name]}")
                sys.stdout.flush()
                status = subprocess.run(command, check=False).returncode
                failed = failed or status not in (0, 1)
            if stem.with_suffix(".json").exists():
                documents.append(json.loads(stem.with_suffix(".json").read_text()))
        print(f"\n## {name}: median (min - max) of {len(documents)} runs")
        for label, (middle, low, high) in medians(documents).items():
            print(f"  {label:<26}{middle:>12.1f}   ({low:.1f} - {high:.1f})")
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
