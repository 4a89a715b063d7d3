"""`make capacity`: the sweep's verdicts, its climb and refinement, and one real small sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scriptgen.loadtest.capacity import Criteria, Level, judge, next_level

from tests.sharing import MACHINE

pytestmark = MACHINE

CRITERIA = Criteria(tokens_per_second=30.0, min_rate_share=29.5 / 30, max_ttfe_ms=250.0)


def _level(streams: int, *runs: tuple[float, float, float]) -> Level:
    level = Level(streams=streams)
    for errors, rate, ttfe in runs:
        level.runs.append(
            {"errors": errors, "stream_rate_p50": rate, "ttfe_p95_ms": ttfe, "core_cpu_share": 0.5}
        )
    judge(level, CRITERIA)
    return level


def test_a_level_holds_on_the_median_of_its_runs() -> None:
    held = _level(500, (0, 30.0, 80), (0, 29.9, 300), (0, 30.0, 90))
    assert held.held and held.ttfe_p95_ms == 90 and not held.why_not
    slow = _level(1500, (0, 28.0, 80), (0, 29.0, 90), (0, 30.0, 70))
    assert not slow.held and slow.why_not == "per-stream 29.00 tok/s"
    late = _level(1500, (0, 30.0, 400))
    assert not late.held and late.why_not == "TTFE p95 400 ms"
    failing = _level(1500, (3, 30.0, 40))
    assert not failing.held and failing.why_not == "3 errors"


def test_the_sweep_climbs_the_ladder_then_halves_the_gap() -> None:
    ladder = [250, 500, 1000, 2000]
    assert next_level(250, None, ladder) == 500
    assert next_level(2000, None, ladder) is None  # the top held
    assert next_level(1000, 2000, ladder) == 1500
    assert next_level(1500, 2000, ladder) == 1750
    assert next_level(1950, 2000, ladder) is None  # the gap is below one step


def _sweep(tmp_path: Path, *flags: str) -> tuple[int, dict[str, object]]:
    summary = tmp_path / "capacity.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scriptgen.loadtest.capacity",
            "--levels=2,4",
            "--ramp-seconds=0.5",
            "--duration=5",
            "--ttft=0.05",
            "--tokens-per-second=30",
            "--projects=1",
            "--refine=0",
            f"--out={tmp_path}",
            f"--json={summary}",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert summary.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(summary.read_text())


#: The real runs check the sweep's mechanics, not the box's timing: a 5-second stream's rate
#: moves by a few tenths with the jitter of its first and last delta (CI once saw 2 streams
#: fall under 29.5 tok/s while the rest of the suite ran), so the rate criterion is loose.
LOOSE_RATE = "--min-rate-share=0.8"


def test_a_real_sweep_reports_the_highest_level_that_held(tmp_path: Path) -> None:
    code, summary = _sweep(tmp_path, LOOSE_RATE)
    assert code == 0 and summary["capacity_streams"] == 4, summary
    levels = summary["levels"]
    assert isinstance(levels, list) and [level["streams"] for level in levels] == [2, 4]
    assert all(level["held"] and level["errors"] == 0 for level in levels)
    assert all(level["stream_rate_p50"] >= 0.8 * 30 for level in levels)


def test_a_sweep_where_nothing_holds_reports_no_capacity(tmp_path: Path) -> None:
    code, summary = _sweep(tmp_path, "--max-ttfe-ms=0.001")
    assert code == 1 and summary["capacity_streams"] == 0
    levels = summary["levels"]
    assert isinstance(levels, list) and [level["streams"] for level in levels] == [2]
    assert "TTFE p95" in levels[0]["why_not"]


def test_a_real_overload_run_refuses_exactly_the_excess_fast(tmp_path: Path) -> None:
    code, summary = _sweep(tmp_path, "--overload-at=3", "--ramp-seconds=1.5", LOOSE_RATE)
    runs = summary["runs"]
    assert isinstance(runs, list) and len(runs) == 1
    (run,) = runs
    assert code == 0 and summary["passed"] is True, summary
    assert run["admitted"] == 3 and run["refused"] == 3 and run["errors"] == 3
    assert 0 < run["refusal_p95_ms"] <= 250


def test_an_overload_run_fails_when_the_core_admits_more_than_asked(tmp_path: Path) -> None:
    # The extra flag comes after --max-streams=3 and wins: nothing is refused.
    code, summary = _sweep(
        tmp_path, "--overload-at=3", "--ramp-seconds=1.5", "--server-arg=--max-streams=0"
    )
    runs = summary["runs"]
    assert isinstance(runs, list)
    assert code == 1 and summary["passed"] is False
    assert "6 admitted, not 3" in runs[0]["failures"]
