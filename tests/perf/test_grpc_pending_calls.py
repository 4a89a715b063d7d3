"""scripts/grpc_pending_calls.py: calls a busy grpc.aio server did not take in time end
CANCELLED, by gRPC, once they waited its unrequested time (README, "Authentication,
tenants and limits"; BENCHMARKS.md, session 37)."""

from __future__ import annotations

import re

from tests.perf._scripts import refusal, run_script

_LINE = re.compile(r"^(\w+)\s+(\d+) calls, ended\s+([\d.]+) to\s+([\d.]+) s after they were sent$")


def _ended(printed: str) -> dict[str, tuple[int, float, float]]:
    found = {}
    for line in printed.splitlines():
        match = _LINE.match(line)
        assert match is not None, printed
        code, count, first, last = match.groups()
        found[code] = (int(count), float(first), float(last))
    return found


def test_calls_left_waiting_past_the_unrequested_time_end_cancelled() -> None:
    printed = run_script(
        "grpc_pending_calls.py", "--calls", "200", "--busy-ms", "40", "--unrequested-seconds", "1"
    )
    ended = _ended(printed)
    assert set(ended) == {"OK", "CANCELLED"}, printed
    answered, cancelled = ended["OK"], ended["CANCELLED"]
    assert answered[0] + cancelled[0] == 200, printed
    # At 40 ms a turn the server takes at most ~25 calls a second: most wait out the second.
    assert cancelled[0] > 100, printed
    # None before its time in gRPC's queue was up (0.9: gRPC reads a clock it caches).
    assert cancelled[1] >= 0.9, printed
    assert cancelled[2] < 10.0, printed  # and not at the default 30 s


def test_an_idle_server_takes_every_call() -> None:
    printed = run_script("grpc_pending_calls.py", "--calls", "50", "--busy-ms", "1")
    ended = _ended(printed)
    assert set(ended) == {"OK"} and ended["OK"][0] == 50, printed


def test_a_busy_time_below_one_millisecond_is_refused_by_name() -> None:
    assert "--busy-ms: must be at least 1, not 0" in refusal(
        "grpc_pending_calls.py", "--busy-ms", "0"
    )
