"""scripts/burst_cpu.py: it finds a burst after the core's start-up pause and counts each
process's CPU over it, and it reads real processes' CPU time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.burst_cpu import STEP_SECONDS, Samples, _cpu_ns, burst

CORE = "python -m scriptgen server --grpc-address=127.0.0.1:0"
GATEWAY = "python -m scriptgen gateway --core-target=127.0.0.1:1"
TOOL = "python scriptgen loadtest --spawn"


def _samples(shares: dict[int, list[float]], start: float = 100.0) -> Samples:
    """Cumulative CPU readings every 5 ms, each process using `shares[pid][k]` of a CPU in
    25 ms step k."""
    samples: Samples = []
    used = dict.fromkeys(shares, 0.0)
    steps = len(next(iter(shares.values())))
    for tick in range(steps * 5 + 1):
        samples.append((start + tick * 0.005, {pid: int(cpu) for pid, cpu in used.items()}))
        step = min(tick // 5, steps - 1)
        for pid, series in shares.items():
            used[pid] += series[step] * 0.005 * 1e9
    return samples


def _cpu_by_pid(report: dict[str, object]) -> dict[int, float]:
    processes = report["processes"]
    assert isinstance(processes, list)
    return {process["pid"]: process["cpu_ms"] for process in processes}


def test_the_burst_begins_after_the_cores_start_up_and_counts_every_process() -> None:
    start_up = [1.0] * 8  # imports: busy, but before the pause
    pause = [0.0] * 16  # 0.4 s waiting for the gateway and the load
    lead = [0.0, 0.0]  # the tool sends and the gateway parses first ...
    work = [1.0] * 12  # ... then the core takes the burst
    tail = [0.0] * 30
    shares = {
        1: start_up + pause + lead + work + tail,  # the core
        2: [0.0] * 24 + [0.5, 0.5] + [0.2] * 12 + tail,  # a gateway worker
        3: [0.0] * 23 + [0.4] * 3 + [0.1] * 12 + tail,  # the load tool
    }
    report = burst({1: CORE, 2: GATEWAY, 3: TOOL}, _samples(shares), window=0.5)
    cpu = _cpu_by_pid(report)
    # From the tool's first busy step (23): the core's 12 busy steps, all in the window; a
    # window edge may fall one 5 ms sample off a step's.
    step_ms = STEP_SECONDS * 1000
    assert cpu[1] == pytest.approx(12 * step_ms, abs=2.5)
    assert cpu[2] == pytest.approx((2 * 0.5 + 12 * 0.2) * step_ms, abs=2.5)
    assert cpu[3] == pytest.approx((3 * 0.4 + 12 * 0.1) * step_ms, abs=2.5)
    assert report["all_cpu_ms"] == pytest.approx(cpu[1] + cpu[2] + cpu[3], abs=0.5)
    processes = report["processes"]
    assert isinstance(processes, list)
    assert {process["pid"]: process["role"] for process in processes} == {
        1: "core",
        2: "gateway",
        3: "load tool",
    }


def test_the_gateways_start_up_just_before_the_load_is_not_counted_as_the_burst() -> None:
    # With --gateway-arg=--workers=2 the workers start (imports: busy) while the core
    # waits, and the load tool starts sending as soon as they are ready.
    start_up = [1.0] * 8
    pause = [0.0] * 16
    gateway_start_up = [0.8] * 12
    lead = [0.0, 0.0]
    work = [1.0] * 12
    tail = [0.0] * 30
    shares = {
        1: start_up + pause + [0.0] * 12 + lead + work + tail,  # the core
        2: [0.0] * 24 + gateway_start_up + [0.5, 0.5] + [0.2] * 12 + tail,  # a worker
        3: [0.0] * 24 + [0.02] * 12 + [0.4, 0.4] + [0.1] * 12 + tail,  # the load tool
    }
    report = burst({1: CORE, 2: GATEWAY, 3: TOOL}, _samples(shares), window=0.5)
    cpu = _cpu_by_pid(report)
    step_ms = STEP_SECONDS * 1000
    # The window begins with the tool's sends (step 36), so it holds the core's whole burst
    # and none of the gateway's start-up (0.8 of a CPU a step: 20 ms a step, 240 in all); a
    # window edge may fall one 5 ms sample off a step's.
    assert cpu[1] == pytest.approx(12 * step_ms, abs=5.0)
    assert cpu[2] == pytest.approx((2 * 0.5 + 12 * 0.2) * step_ms, abs=5.0)
    steps = report["steps_ms"]
    assert isinstance(steps, list)
    assert steps[0][2] == pytest.approx(0.4 * step_ms, abs=0.5)  # the tool's first send


def test_by_the_gateway_a_cores_late_start_up_is_not_the_burst() -> None:
    """A core with a provider worker waits idle for it, then finishes its own start-up:
    the core's rule takes that for the burst; the gateway's does not."""
    start_up = [1.0] * 8
    waits_for_its_worker = [0.0] * 16
    finishes = [0.9, 0.9]  # after the worker's `ready`
    pause = [0.0] * 16
    lead = [0.0, 0.0]
    work = [1.0] * 12
    tail = [0.0] * 30
    shares = {
        1: start_up + waits_for_its_worker + finishes + pause + lead + work + tail,  # the core
        2: [0.0] * 42 + [0.5, 0.5] + [0.2] * 12 + tail,  # a gateway worker
        3: [0.0] * 41 + [0.4] * 3 + [0.1] * 12 + tail,  # the load tool
    }
    names = {1: CORE, 2: GATEWAY, 3: TOOL}
    step_ms = STEP_SECONDS * 1000
    by_core = _cpu_by_pid(burst(names, _samples(shares), window=0.5))
    assert by_core[1] < 12 * step_ms / 2  # the start-up's two steps and a little of the work
    report = burst(names, _samples(shares), window=0.5, by="gateway")
    cpu = _cpu_by_pid(report)
    assert cpu[1] == pytest.approx(12 * step_ms, abs=2.5)
    assert cpu[2] == pytest.approx((2 * 0.5 + 12 * 0.2) * step_ms, abs=2.5)
    steps = report["steps_ms"]
    assert isinstance(steps, list)
    assert steps[0][2] == pytest.approx(0.4 * step_ms, abs=0.5)  # the tool's first send


def test_no_burst_is_an_error_not_a_report() -> None:
    shares = {1: [1.0] * 8 + [0.0] * 40}  # start-up, then nothing
    with pytest.raises(SystemExit, match="no burst"):
        burst({1: CORE}, _samples(shares), window=0.5)
    with pytest.raises(SystemExit, match="no core"):
        burst({3: TOOL}, _samples({3: [0.0] * 10}), window=0.5)


#: A child that spends 0.2 s of CPU on its one thread, says so, and waits to be closed.
_BUSY_CHILD = """
import sys, time
deadline = time.process_time() + 0.2
while time.process_time() < deadline:
    pass
print("spent", flush=True)
sys.stdin.read()
"""


def test_a_processs_cpu_time_is_read_from_proc() -> None:
    # A child of its own: this process's threads come and go, and a thread that ends
    # takes its time out of the sum (the module says so).
    child = subprocess.Popen(
        [sys.executable, "-c", _BUSY_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "spent\n"
        spent = _cpu_ns(child.pid)
        assert spent is not None and 200_000_000 <= spent < 2_000_000_000
    finally:
        child.communicate("")
    assert _cpu_ns(child.pid) is None  # it has ended
    assert _cpu_ns(2**22 + 1) is None  # above the kernel's pid limit: no such process
