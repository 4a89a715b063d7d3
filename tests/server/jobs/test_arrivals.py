"""Pipelines wait for a burst of new jobs to be started, but never longer than the cap; a job
arriving alone or in a steady stream begins at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.jobs.arrivals import BURST_STARTS, Arrivals


def _burst(arrivals: Arrivals, starts: int = BURST_STARTS) -> None:
    for _ in range(starts):
        arrivals.arrived()


async def test_a_job_alone_begins_at_once() -> None:
    arrivals = Arrivals(quiet_seconds=5.0, max_defer_seconds=5.0)
    with arrivals.starting():  # even while its own (or another) start is in progress
        arrivals.arrived()
        began = time.monotonic()
        await arrivals.settled()
    assert time.monotonic() - began < 0.05


async def test_steady_arrivals_with_slow_starts_do_not_hold_pipelines() -> None:
    """100 jobs a second, each start taking 200 ms (a loaded networked store): 20 always in
    progress, never a pause of the quiet time, and still no pipeline waits."""
    arrivals = Arrivals(quiet_seconds=0.05, max_defer_seconds=5.0)
    waits: list[float] = []

    async def job() -> None:
        with arrivals.starting():
            await asyncio.sleep(0.2)
        began = time.monotonic()
        await arrivals.settled()
        waits.append(time.monotonic() - began)

    jobs = []
    for _ in range(40):
        jobs.append(asyncio.create_task(job()))
        await asyncio.sleep(0.01)
    await asyncio.gather(*jobs)
    assert max(waits) < 0.05  # the cap is 5 s


async def test_a_burst_is_so_many_starts_within_the_window() -> None:
    now = [0.0]
    arrivals = Arrivals(
        clock=lambda: now[0], burst_starts=4, burst_window_seconds=0.05, max_defer_seconds=0.5
    )
    for _ in range(3):
        arrivals.arrived()
        now[0] += 0.02
    arrivals.arrived()  # the 4th, 60 ms after the 1st: not a burst
    assert not arrivals.bursting()
    now[0] += 0.01
    arrivals.arrived()  # 4 within 50 ms
    assert arrivals.bursting()
    now[0] += 0.4  # no arrival since, starts still in progress: the burst goes on
    assert arrivals.bursting()
    now[0] += 0.2  # 0.6 s after starts last came that fast: over
    assert not arrivals.bursting()


async def test_no_arrival_means_no_wait() -> None:
    arrivals = Arrivals(quiet_seconds=5.0, max_defer_seconds=5.0)
    began = time.monotonic()
    await arrivals.settled()
    assert time.monotonic() - began < 0.05


async def test_pipelines_wait_while_jobs_keep_arriving() -> None:
    arrivals = Arrivals(quiet_seconds=0.25, max_defer_seconds=5.0)
    _burst(arrivals)
    waiting = asyncio.create_task(arrivals.settled())
    for _ in range(6):  # a job every 50 ms for 0.3 s: the burst goes on
        await asyncio.sleep(0.05)
        assert not waiting.done()
        arrivals.arrived()
    ended = time.monotonic()
    await asyncio.wait_for(waiting, 2.0)
    assert time.monotonic() - ended >= 0.2  # it waited for the pause after the last one


async def test_an_endless_stream_of_arrivals_delays_a_pipeline_only_up_to_the_cap() -> None:
    arrivals = Arrivals(quiet_seconds=0.1, max_defer_seconds=0.3)
    _burst(arrivals)
    began = time.monotonic()
    waiting = asyncio.create_task(arrivals.settled())
    while not waiting.done():
        arrivals.arrived()
        await asyncio.sleep(0.01)
        assert time.monotonic() - began < 2.0
    assert 0.25 <= time.monotonic() - began < 1.0


async def test_pipelines_wait_while_a_start_is_in_progress() -> None:
    arrivals = Arrivals(quiet_seconds=0.05, max_defer_seconds=5.0)
    _burst(arrivals)
    with arrivals.starting():  # a start waiting for its project read, long past the quiet time
        waiting = asyncio.create_task(arrivals.settled())
        await asyncio.sleep(0.2)
        assert not waiting.done()
    ended = time.monotonic()
    await asyncio.wait_for(waiting, 2.0)
    assert time.monotonic() - ended >= 0.04  # and then the quiet time after it ended


async def test_a_start_that_never_ends_delays_pipelines_only_up_to_the_cap() -> None:
    arrivals = Arrivals(quiet_seconds=0.05, max_defer_seconds=0.3)
    _burst(arrivals)
    with arrivals.starting():
        began = time.monotonic()
        await asyncio.wait_for(arrivals.settled(), 2.0)
        assert 0.25 <= time.monotonic() - began < 1.0


async def test_a_few_pipelines_begin_per_turn_of_the_loop() -> None:
    arrivals = Arrivals(quiet_seconds=0.0, max_defer_seconds=1.0, per_turn=3)
    turn = 0
    ticking = True

    def tick() -> None:
        nonlocal turn
        turn += 1
        if ticking:
            asyncio.get_running_loop().call_soon(tick)

    asyncio.get_running_loop().call_soon(tick)
    turns: list[int] = []

    async def pipeline() -> None:
        await arrivals.settled()
        turns.append(turn)

    pipelines = [asyncio.create_task(pipeline()) for _ in range(10)]
    await asyncio.sleep(0)  # every pipeline past the wait: 3 through, the rest in line
    pipelines[4].cancel()  # a cancelled job's pipeline, in line, takes no place
    await asyncio.gather(*pipelines, return_exceptions=True)
    ticking = False
    assert len(turns) == 9
    per_turn = [turns.count(t) for t in sorted(set(turns))]
    assert max(per_turn) <= 3
    assert len(per_turn) >= 3  # spread over turns, not all in one
    assert turns == sorted(turns)  # in the order they came


def test_at_least_one_pipeline_begins_per_turn_and_one_start_makes_a_burst() -> None:
    with pytest.raises(ValueError, match="per_turn"):
        Arrivals(per_turn=0)
    with pytest.raises(ValueError, match="burst_starts"):
        Arrivals(burst_starts=0)
    with pytest.raises(ValueError, match="burst_window_seconds"):
        Arrivals(burst_window_seconds=-1.0)


async def test_held_pipelines_are_looked_at_by_one_timer_not_each_by_its_own() -> None:
    """200 pipelines held 0.2 s while a start is in progress (quiet time 10 ms): one timer
    looks again every 10 ms for all of them; each polling on its own read the clock
    ~7000 times."""
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        return time.monotonic()

    arrivals = Arrivals(quiet_seconds=0.01, max_defer_seconds=5.0, clock=clock)
    _burst(arrivals)
    with arrivals.starting():
        pipelines = [asyncio.create_task(arrivals.settled()) for _ in range(200)]
        await asyncio.sleep(0.2)
        assert not any(p.done() for p in pipelines)
        reads = 0
        await asyncio.sleep(0.2)
        assert reads < 200  # ~20 looks, each reading the clock a few times
    await asyncio.wait_for(asyncio.gather(*pipelines), 2.0)


def test_a_burst_holds_pipelines_only_for_its_hold_then_begins_them_until_it_is_over() -> None:
    now = [0.0]
    arrivals = Arrivals(
        clock=lambda: now[0],
        burst_starts=4,
        burst_window_seconds=0.05,
        max_defer_seconds=0.3,
        max_burst_hold_seconds=1.0,
    )
    for start in range(300):  # 200 starts a second for 1.5 s: a burst from the 4th on
        now[0] = start * 0.005
        arrivals.arrived()
        if start >= 3:
            assert arrivals.bursting()
            # The burst began at its 4th start (15 ms): it holds for 1 s from there.
            if abs(now[0] - 1.015) > 0.002:
                assert arrivals.holding() == (now[0] < 1.015)
    now[0] += 0.4  # no start since: that burst is over
    assert not arrivals.bursting() and not arrivals.holding()
    for _ in range(4):  # the next burst holds pipelines again
        arrivals.arrived()
    assert arrivals.holding()
    with pytest.raises(ValueError, match="max_burst_hold_seconds"):
        Arrivals(max_burst_hold_seconds=-1.0)


async def test_starts_that_keep_coming_at_the_burst_rate_delay_later_pipelines_no_more() -> None:
    """Starts every 5 ms never leave the quiet time: a pipeline held early goes when the
    burst's hold ends, and one that comes after it begins at once, though they go on."""
    arrivals = Arrivals(
        # Far above the starts' spacing, even on a loaded machine, and above the hold: only
        # the hold's end can let the early pipeline go before the starts stop.
        quiet_seconds=1.0,
        max_defer_seconds=5.0,
        burst_starts=4,
        burst_window_seconds=0.05,
        max_burst_hold_seconds=0.4,
    )
    began = time.monotonic()
    early: asyncio.Task[None] | None = None
    late_waits: list[float] = []
    while (elapsed := time.monotonic() - began) < 0.9:
        arrivals.arrived()
        if early is None and elapsed > 0.1:
            early = asyncio.create_task(arrivals.settled())
        if elapsed > 0.6 and not late_waits:
            asked = time.monotonic()
            await arrivals.settled()
            late_waits.append(time.monotonic() - asked)
        if early is not None and elapsed < 0.3:
            assert not early.done()  # held: the burst is on and its hold is not over
        await asyncio.sleep(0.005)
    assert early is not None and early.done()  # went at the hold's end, ~0.4 s in
    assert late_waits and late_waits[0] < 0.05  # the cap on a pipeline's own wait is 5 s
