"""scripts/relay_write_costs.py has a real grpc.aio server in a child process write messages of
each size to this process, and prints the server's CPU per message."""

from __future__ import annotations

from tests.perf._scripts import refusal, run_and_median, run_script


def test_the_script_prints_cpu_per_message_for_each_size() -> None:
    printed = run_script(
        "relay_write_costs.py", "--messages", "50", "--runs", "2", "--sizes", "200,20000"
    )
    for label in ("200B", "20000B"):
        run_and_median(printed, label, "µs/message", runs=2)


def test_bad_sizes_are_refused_by_name() -> None:
    assert "--sizes: each size must be 1..1048576 bytes" in refusal(
        "relay_write_costs.py", "--sizes", "0"
    )
    assert "--sizes: must be sizes in bytes joined by commas" in refusal(
        "relay_write_costs.py", "--sizes", "big"
    )
    assert "--messages: must be at least 1, not 0" in refusal(
        "relay_write_costs.py", "--messages", "0"
    )
