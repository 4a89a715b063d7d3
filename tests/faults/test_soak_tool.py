"""`make soak`'s tool in small: a real core under a short steady load, its summary checked."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.sharing import MACHINE

pytestmark = MACHINE


def test_a_short_soak_completes_jobs_and_reports_its_window() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.faults.soak",
            "run",
            "--seconds=20",
            "--streams=3",
            "--capacity=6",
            "--episode-minutes=1",
            "--tokens-per-second=60",
            "--ttft=0.05",
            "--spread-seconds=1",
            "--finished-jobs-kept=2",
            "--level-seconds=2",
            "--level-percent=2",
            "--max-warmup=60",
            "--projects=2",
            # Twenty seconds are mostly start-up: the bound here is loose, the tool is the test.
            "--max-rss-growth=50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert done.returncode == 0, (summary, done.stderr[-2000:])
    assert summary["streams"] == 3 and summary["jobs_completed"] >= 3
    assert summary["errors"] == {} and summary["failures"] == []
    # The window opened after the warm-up: the spread start plus one job (1 s + 140 tokens at
    # 60 tok/s), two finished jobs kept and 2 s of RSS within 2 % of the 2 s before.
    assert summary["warmup_met"] == {"time": True, "retention": True, "rss_levelled": True}
    assert 1 + 140 / 60 <= summary["window_start_seconds"] <= 60
    assert summary["seconds"] == 20
    assert summary["rss_after_warmup_mib"] > 0 and summary["fds_after_warmup"] > 0
