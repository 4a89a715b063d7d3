"""scripts/index_costs.py indexes episodes at once on embedded Chroma and prints its figures."""

from __future__ import annotations

import re

from tests.perf._scripts import refusal, run_script


def test_the_script_prints_cpu_per_episode_and_the_writes_it_took() -> None:
    printed = run_script(
        "index_costs.py", "--episodes", "12", "--tokens", "80", "--runs", "2", "--max-records", "8"
    )
    runs = re.findall(
        r"^run \d: ([\d.]+) ms CPU per episode, all written in [\d.]+ s, (\d+) Chroma writes$",
        printed,
        re.M,
    )
    assert len(runs) == 2, printed
    for cpu, writes in runs:
        assert float(cpu) > 0
        # Episodes of 80 tokens make 2 records: 24 records, 8 a write (the first may go alone).
        assert 3 <= int(writes) <= 4, printed
    assert re.search(r"^median of 2: [\d.]+ ms CPU per episode", printed, re.M), printed


def test_existing_episodes_are_indexed_first_and_not_counted() -> None:
    printed = run_script(
        "index_costs.py",
        *("--episodes", "6", "--tokens", "80", "--runs", "1", "--max-records", "4"),
        *("--existing", "10"),
    )
    # The 6 measured episodes' 12 records, 4 a write (the first may go alone); the 10
    # existing episodes' writes are not among them.
    writes = re.findall(
        r"^run 1: [\d.]+ ms CPU per episode, .* (\d+) Chroma writes$", printed, re.M
    )
    assert len(writes) == 1 and 3 <= int(writes[0]) <= 4, printed
    assert "10 existing" in printed, printed


def test_a_negative_count_of_existing_episodes_is_refused() -> None:
    assert "--existing" in refusal("index_costs.py", "--existing", "-1")
