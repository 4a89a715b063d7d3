"""The event-loop lag histogram: a blocked loop shows as late timers, an idle one does not,
and both servers export it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from scriptgen._loop_lag import METRIC, LoopLagMonitor, loop_lag_histogram

from gateway import state
from gateway.app import create_app
from server import Core
from tests.conftest import fast_core_config
from tests.gateway.conftest import gateway_config, serve_gateway
from tests.sharing import MACHINE

pytestmark = MACHINE


def _observed(registry: CollectorRegistry) -> tuple[float, float]:
    count = registry.get_sample_value(f"{METRIC}_count") or 0.0
    total = registry.get_sample_value(f"{METRIC}_sum") or 0.0
    return count, total


async def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(loop_lag_histogram(registry), interval_seconds=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.2)
        idle_count, idle_total = _observed(registry)
        assert idle_count >= 5
        assert idle_total / idle_count < 0.05  # on time, give or take the timer's resolution
        time.sleep(0.3)  # noqa: ASYNC251 - the point: a blocking call holds the loop
        await asyncio.sleep(0.05)
        count, total = _observed(registry)
        assert count > idle_count
        assert total - idle_total >= 0.25  # the timer due during the block ran that late
        on_time = registry.get_sample_value(f"{METRIC}_bucket", {"le": "0.25"}) or 0.0
        assert count - on_time >= 1  # in the histogram's buckets too
    finally:
        monitor.stop()
    stopped = _observed(registry)
    await asyncio.sleep(0.05)
    assert _observed(registry) == stopped and not monitor.running


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopLagMonitor(loop_lag_histogram(CollectorRegistry()), interval_seconds=0)


@pytest.mark.timeout(30)
async def test_the_core_and_the_gateway_export_their_loops_lag(core: Core) -> None:
    async with serve_gateway(f"127.0.0.1:{core.grpc_port}") as http:
        await asyncio.sleep(0.2)  # a few timer wake-ups
        gateway_text = (await http.get("/metrics")).text
    async with httpx.AsyncClient() as client:
        core_text = (await client.get(f"http://127.0.0.1:{core.metrics_port}/metrics")).text
    for text in (core_text, gateway_text):
        counts = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(f"{METRIC}_count")
        ]
        assert counts and counts[0] >= 1, text[-2000:]


def test_a_monitor_left_on_a_closed_loop_measures_the_next_one() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(loop_lag_histogram(registry), interval_seconds=0.01)

    async def measured_for(seconds: float) -> None:
        monitor.start()
        await asyncio.sleep(seconds)

    with asyncio.Runner() as first:
        first.run(measured_for(0.05))  # its loop closes with the timer still set, no stop()
    assert not monitor.running
    before, _ = _observed(registry)
    assert before >= 1
    with asyncio.Runner() as second:
        second.run(measured_for(0.1))
        assert _observed(registry)[0] >= before + 3  # timers on the second loop
        monitor.stop()
    assert not monitor.running


async def _stays_still(registry: CollectorRegistry) -> None:
    stopped = _observed(registry)
    await asyncio.sleep(0.2)  # four of the 50 ms timers, had one been left set
    assert _observed(registry) == stopped


@pytest.mark.timeout(30)
async def test_a_stopped_core_stops_its_timer(tmp_path: Path) -> None:
    core = Core(fast_core_config(tmp_path / "core"))
    await core.start()
    try:
        await asyncio.sleep(0.2)
        assert _observed(core.metrics.registry)[0] >= 1
    finally:
        await core.stop()
    await _stays_still(core.metrics.registry)


@pytest.mark.timeout(30)
async def test_a_gateway_app_cleaned_up_stops_its_timer(core: Core) -> None:
    app = create_app(gateway_config(f"127.0.0.1:{core.grpc_port}"))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the app's cleanup contexts up to their yield
    registry = app[state.METRICS].registry
    try:
        await asyncio.sleep(0.2)
        assert _observed(registry)[0] >= 1
    finally:
        await runner.cleanup()
    await _stays_still(registry)
