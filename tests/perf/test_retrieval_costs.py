"""scripts/retrieval_costs.py indexes episodes into a real `chroma run` (or embedded Chroma),
with other projects beside them in the same collection, and prints what a retrieve costs the
core and Chroma."""

from __future__ import annotations

import re

from tests.perf._scripts import refusal, run_script


def test_the_script_prints_the_costs_of_a_retrieve_among_other_projects() -> None:
    printed = run_script(
        "retrieval_costs.py",
        *("--episodes", "3", "--runs", "2", "--retrieves", "2", "--other-projects", "1"),
    )
    assert "3 episodes of 12 chunks indexed in 2 projects" in printed, printed
    runs = re.findall(
        r"^run \d+: core CPU +([\d.]+) ms +wall +([\d.]+) ms +received +([\d.]+) MB"
        r" +chroma CPU +([\d.]+) ms",
        printed,
        re.M,
    )
    assert len(runs) == 2, printed
    assert all(float(core) > 0 and float(wall) > 0 and float(mb) > 0 for core, wall, mb, _ in runs)
    assert re.search(r"^median of 2 runs of 2 retrieves: core CPU [\d.]+ ms", printed, re.M)


def test_the_script_measures_embedded_chroma_in_its_own_process() -> None:
    printed = run_script(
        "retrieval_costs.py", *("--embedded", "--episodes", "2", "--runs", "1", "--retrieves", "2")
    )
    run = re.search(
        r"^run 1: core CPU +([\d.]+) ms +wall +([\d.]+) ms +received +0\.000 MB", printed, re.M
    )
    assert run is not None and float(run.group(1)) > 0, printed
    assert "chroma CPU" not in printed, "no server to measure"


def test_counts_out_of_range_are_refused_by_name() -> None:
    assert "--other-projects: must not be negative, not -1" in refusal(
        "retrieval_costs.py", "--other-projects", "-1"
    )
    assert "--runs: must be at least 1, not 0" in refusal("retrieval_costs.py", "--runs", "0")
