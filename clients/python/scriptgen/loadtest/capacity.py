"""`make capacity`: find how many concurrent streams a server holds at full rate, by a sweep.

    python -m scriptgen.loadtest.capacity [--protocol grpc|sse] [--levels 250,500,...]
                                          [--runs 1] [--out DIR] [--json FILE]

Each level is `scriptgen loadtest --spawn` with that many streams arriving over
--ramp-seconds, writing 20-minute episodes at --tokens-per-second (fresh servers
every run, admission control off so nothing is refused). A level **holds** when
the median over its runs has no error, a per-stream median of at least
--min-rate-share of the writer's rate, and a time to first event p95 within
--max-ttfe-ms. The sweep climbs the levels until one fails, then halves the gap
between the last held level and the failed one --refine times. The capacity is
the highest level that held; `make soak` runs at half of it and the overload run
(`make overload`) offers twice it.

    python -m scriptgen.loadtest.capacity --overload-at CAPACITY

is that overload run: a core admitting CAPACITY streams (`--max-streams`) is offered
twice as many, arriving over --ramp-seconds. It passes when exactly the excess is
refused (RESOURCE_EXHAUSTED, or 429/503 through a gateway), each refusal within
--max-refusal-ms (p95), and the admitted streams keep the held level's criteria.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scriptgen.loadtest.bench import (
    LONG_EPISODES,
    error_count,
    figure,
    latency,
    per_role,
    run_loadtest,
    until_stopped,
)

DEFAULT_LEVELS = (250, 500, 1000, 1500, 2000, 2500, 3000)

#: Outcomes of admitted streams: ended by the job, or still writing when the run was cut.
ADMITTED = ("completed", "cut")

#: Error kinds (`scriptgen loadtest`'s) that are admission control's retryable refusals.
REFUSALS = frozenset({"grpc RESOURCE_EXHAUSTED", "http 429", "http 503"})


@dataclass(frozen=True)
class Criteria:
    """What a level must meet to count as held."""

    tokens_per_second: float
    min_rate_share: float
    max_ttfe_ms: float

    @property
    def min_stream_rate(self) -> float:
        return self.tokens_per_second * self.min_rate_share


@dataclass
class Level:
    """One level of the sweep: its runs' figures and their medians."""

    streams: int
    runs: list[dict[str, float]] = field(default_factory=list)
    errors: float = 0.0
    stream_rate_p50: float = 0.0
    ttfe_p95_ms: float = 0.0
    core_cpu_share: float = 0.0
    held: bool = False
    why_not: str = ""


def _figures(document: dict[str, Any]) -> dict[str, float]:
    """The figures the criteria read from one `scriptgen loadtest --json` document."""
    seconds = figure("run.measured_seconds")(document)
    cpu = per_role("core", "cpu_seconds")(document) or 0.0
    ttfe = latency("time_to_first_event", "p95")(document)
    refusal = latency("time_to_error", "p95")(document)
    errors = document.get("errors", {})
    return {
        "errors": error_count(document),
        "stream_rate_p50": figure("throughput.stream_tokens_per_second.p50")(document) or 0.0,
        "ttfe_p95_ms": 1e9 if ttfe is None else ttfe,
        "core_cpu_share": cpu / seconds if seconds else 0.0,
        "admitted": sum(figure(f"outcomes.{kind}")(document) or 0.0 for kind in ADMITTED),
        "refused": float(sum(count for kind, count in errors.items() if kind in REFUSALS)),
        "refusal_p95_ms": refusal or 0.0,
    }


def judge(level: Level, criteria: Criteria) -> None:
    """Fill the level's medians and whether it held."""
    level.errors = statistics.median(r["errors"] for r in level.runs)
    level.stream_rate_p50 = statistics.median(r["stream_rate_p50"] for r in level.runs)
    level.ttfe_p95_ms = statistics.median(r["ttfe_p95_ms"] for r in level.runs)
    level.core_cpu_share = statistics.median(r["core_cpu_share"] for r in level.runs)
    reasons = []
    if level.errors:
        reasons.append(f"{level.errors:g} errors")
    if level.stream_rate_p50 < criteria.min_stream_rate:
        reasons.append(f"per-stream {level.stream_rate_p50:.2f} tok/s")
    if level.ttfe_p95_ms > criteria.max_ttfe_ms:
        reasons.append(f"TTFE p95 {level.ttfe_p95_ms:.0f} ms")
    level.held = not reasons
    level.why_not = ", ".join(reasons)


def next_level(held: int, failed: int | None, ladder: Sequence[int]) -> int | None:
    """The next level to try: up the ladder, or halfway into a found gap (None: done)."""
    if failed is None:
        higher = [n for n in ladder if n > held]
        return higher[0] if higher else None
    middle = (held + failed) // 2
    step = max(50, (failed - held) // 10)
    return middle if failed - held > step else None


def judge_overload(
    figures: dict[str, float], capacity: int, criteria: Criteria, max_refusal_ms: float
) -> list[str]:
    """Why an overload run at twice `capacity` failed; empty when it passed."""
    reasons = []
    if figures["admitted"] != capacity:
        reasons.append(f"{figures['admitted']:g} admitted, not {capacity}")
    if figures["refused"] != capacity or figures["errors"] != figures["refused"]:
        reasons.append(f"{figures['refused']:g} refused of {figures['errors']:g} errors")
    if figures["refusal_p95_ms"] > max_refusal_ms:
        reasons.append(f"refusal p95 {figures['refusal_p95_ms']:.0f} ms")
    if figures["stream_rate_p50"] < criteria.min_stream_rate:
        reasons.append(f"admitted per-stream {figures['stream_rate_p50']:.2f} tok/s")
    if figures["ttfe_p95_ms"] > criteria.max_ttfe_ms:
        reasons.append(f"admitted TTFE p95 {figures['ttfe_p95_ms']:.0f} ms")
    return reasons


def overload(args: argparse.Namespace, criteria: Criteria) -> dict[str, Any]:
    """Offer twice --overload-at to a core admitting --overload-at streams."""
    capacity = int(args.overload_at)
    args.server_arg = [f"--max-streams={capacity}", *args.server_arg]
    runs = []
    for run in range(1, args.runs + 1):
        figures = _run_level(args, 2 * capacity, run, name="overload")
        if figures is None:
            raise SystemExit(f"the load tool could not run {2 * capacity} streams")
        reasons = judge_overload(figures, capacity, criteria, args.max_refusal_ms)
        print(f"   overload run {run}: {figures} {'; '.join(reasons) or 'passed'}")
        runs.append({**figures, "failures": reasons})
    return {
        "overload_at": capacity,
        "offered": 2 * capacity,
        "runs": runs,
        "passed": all(not run["failures"] for run in runs),
    }


def _loadtest_arguments(args: argparse.Namespace, streams: int) -> list[str]:
    return [
        "--spawn",
        f"--protocol={args.protocol}",
        f"--streams={streams}",
        f"--ramp-seconds={args.ramp_seconds:g}",
        f"--ttft={args.ttft:g}",
        f"--tokens-per-second={args.tokens_per_second:g}",
        f"--projects={args.projects}",
        f"--duration={args.duration:g}",
        LONG_EPISODES,
        *(f"--server-arg={flag}" for flag in args.server_arg),
    ]


def _run_level(
    args: argparse.Namespace, streams: int, run: int, *, name: str = "capacity"
) -> dict[str, float] | None:
    stem = args.out / f"{name}-{args.protocol}-{streams}-{run}"
    arguments = _loadtest_arguments(args, streams)
    path = stem.with_suffix(".json")
    if not run_loadtest(arguments, stem, f"{streams} streams, run {run}") or not path.exists():
        return None
    return _figures(json.loads(path.read_text()))


def sweep(args: argparse.Namespace, criteria: Criteria) -> tuple[int, list[Level]]:
    """Climb and refine; the highest held level (0 when none held) and every level tried."""
    ladder = sorted(args.levels)
    tried: list[Level] = []
    held, failed = 0, None
    streams: int | None = ladder[0]
    refinements = 0
    while streams is not None:
        level = Level(streams=streams)
        for run in range(1, args.runs + 1):
            figures = _run_level(args, streams, run)
            if figures is None:
                raise SystemExit(f"the load tool could not run {streams} streams")
            level.runs.append(figures)
        judge(level, criteria)
        tried.append(level)
        verdict = "held" if level.held else f"did not hold ({level.why_not})"
        print(
            f"   {streams} streams {verdict}: per-stream {level.stream_rate_p50:.2f} tok/s,"
            f" TTFE p95 {level.ttfe_p95_ms:.0f} ms, errors {level.errors:g},"
            f" core CPU {level.core_cpu_share:.2f}"
        )
        sys.stdout.flush()
        if level.held:
            held = max(held, streams)
        else:
            failed = streams if failed is None else min(failed, streams)
        if failed is not None and (held == 0 or refinements >= args.refine):
            break
        if failed is not None:
            refinements += 1
        streams = next_level(held, failed, ladder)
    return held, tried


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C (or SIGTERM, SIGHUP) stops it as it stops `make bench`: the run in progress
    stops its servers, then the command exits with 128 + the signal."""
    return until_stopped("capacity", "no result", lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scriptgen.loadtest.capacity")
    parser.add_argument("--protocol", choices=["grpc", "sse"], default="grpc")
    parser.add_argument(
        "--levels",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(DEFAULT_LEVELS),
        help="comma-separated stream counts to climb (default: %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per level (median)")
    parser.add_argument("--refine", type=int, default=2, help="halvings of the found gap")
    parser.add_argument("--ramp-seconds", type=float, default=30.0)
    parser.add_argument(
        "--duration",
        type=float,
        default=150.0,
        help="long enough for the streams (~95 s each) to complete: saves and indexing count",
    )
    parser.add_argument("--ttft", type=float, default=0.3)
    parser.add_argument("--tokens-per-second", type=float, default=30.0)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--min-rate-share", type=float, default=29.5 / 30)
    parser.add_argument("--max-ttfe-ms", type=float, default=250.0)
    parser.add_argument("--server-arg", action="append", default=[], help="extra core flag")
    parser.add_argument(
        "--overload-at",
        type=int,
        help="instead of a sweep: offer twice this many streams to a core admitting this many",
    )
    parser.add_argument("--max-refusal-ms", type=float, default=250.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/scriptgen-capacity"))
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 9 or any(not 1 <= n <= 5000 for n in args.levels):
        parser.error("--runs must be 1..9 and every level 1..5000 streams")
    args.out.mkdir(parents=True, exist_ok=True)
    criteria = Criteria(args.tokens_per_second, args.min_rate_share, args.max_ttfe_ms)
    command = "python -m scriptgen.loadtest.capacity " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.overload_at is not None:
        if not 1 <= args.overload_at <= 2500:
            parser.error("--overload-at must be 1..2500 (twice it is offered)")
        result = {**overload(args, criteria), "command": command}
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return 0 if result["passed"] else 1
    capacity, tried = sweep(args, criteria)
    summary = {
        "protocol": args.protocol,
        "capacity_streams": capacity,
        "criteria": {**asdict(criteria), "min_stream_rate": criteria.min_stream_rate},
        "runs_per_level": args.runs,
        "levels": [asdict(level) for level in sorted(tried, key=lambda t: t.streams)],
        "command": command,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if capacity else 1


if __name__ == "__main__":
    sys.exit(main())
