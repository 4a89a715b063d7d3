"""The delta grid wakes a bounded number of streams per turn of the loop, in order."""

from __future__ import annotations

import asyncio
import functools

from server.delta_grid import STREAMS_PER_TURN, DeltaGrid, delta_grid


async def test_a_crowded_grid_point_runs_in_turns_with_other_work_between() -> None:
    loop = asyncio.get_running_loop()
    grid = DeltaGrid()
    ran: list[object] = []
    when = loop.time() + 0.01

    def first() -> None:
        ran.append(0)
        loop.call_soon(ran.append, "other work")  # ready in the next turn

    grid.call_at(when, first)
    for number in range(1, 3 * STREAMS_PER_TURN):
        grid.call_at(when, functools.partial(ran.append, number))
    done = loop.create_future()
    grid.call_at(when, functools.partial(done.set_result, None))
    await asyncio.wait_for(done, 5)
    # One turn ran STREAMS_PER_TURN callbacks; the other work came before the rest.
    assert ran.index("other work") == STREAMS_PER_TURN
    assert [n for n in ran if n != "other work"] == list(range(3 * STREAMS_PER_TURN))


async def test_points_run_in_time_order_and_cancelled_calls_do_not_run() -> None:
    loop = asyncio.get_running_loop()
    grid = DeltaGrid()
    ran: list[str] = []
    now = loop.time()
    grid.call_at(now + 0.02, lambda: ran.append("later"))
    dropped = grid.call_at(now + 0.01, lambda: ran.append("dropped"))
    grid.call_at(now + 0.01, lambda: ran.append("sooner"))
    dropped.cancel()
    assert dropped.cancelled()
    done = loop.create_future()
    grid.call_at(now + 0.02, functools.partial(done.set_result, None))
    await asyncio.wait_for(done, 5)
    assert ran == ["sooner", "later"]


async def test_sleep_until_wakes_at_the_point_and_a_cancelled_sleep_leaves_no_call() -> None:
    loop = asyncio.get_running_loop()
    grid = delta_grid()
    assert delta_grid() is grid  # one per loop
    due = loop.time() + 0.02
    await grid.sleep_until(due)
    assert loop.time() >= due - 0.001  # loop timers have millisecond grain
    sleeper = asyncio.create_task(grid.sleep_until(loop.time() + 0.02))
    await asyncio.sleep(0)
    sleeper.cancel()
    await asyncio.sleep(0.05)  # the point passes: its call was dropped, nothing fails
    assert sleeper.cancelled()


async def test_a_failing_callback_is_reported_and_the_rest_still_run() -> None:
    loop = asyncio.get_running_loop()
    grid = DeltaGrid()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    ran: list[int] = []
    when = loop.time() + 0.01

    def fail() -> None:
        raise RuntimeError("boom")

    grid.call_at(when, fail)
    grid.call_at(when, lambda: ran.append(1))
    await grid.sleep_until(when)
    loop.set_exception_handler(None)
    assert ran == [1]
    assert isinstance(reported[0]["exception"], RuntimeError)


async def test_a_callback_that_raises_past_the_handler_does_not_stop_the_grid() -> None:
    loop = asyncio.get_running_loop()
    grid = DeltaGrid()
    when = loop.time() + 0.01
    stopper = asyncio.get_running_loop().create_future()

    def interrupt() -> None:
        raise asyncio.CancelledError  # not an Exception: the loop itself sees it

    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    grid.call_at(when, interrupt)
    grid.call_at(when, functools.partial(stopper.set_result, "ran"))
    assert await asyncio.wait_for(stopper, 5) == "ran"
    loop.set_exception_handler(None)
