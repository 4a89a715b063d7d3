"""Serving processes keep their start-up heap out of garbage collections and collect their
young objects less often, and give both back on stop."""

from __future__ import annotations

import gc
from pathlib import Path

from scriptgen._heap import YOUNG_THRESHOLD

from gateway import GatewayConfig, GatewayServer
from server import Core
from tests.conftest import fast_core_config


async def test_the_start_up_heap_is_frozen_while_the_core_serves(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    assert before[0] < YOUNG_THRESHOLD
    core = Core(fast_core_config(tmp_path / "core"))
    await core.start()
    try:
        # Everything alive at start (modules, stores, gRPC): not walked by any collection.
        assert gc.get_freeze_count() > 10_000
        # Young objects collected less often; the older generations' ratios kept.
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    finally:
        await core.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_the_start_up_heap_is_frozen_while_the_gateway_serves() -> None:
    # No core behind it: the gateway serves (not ready) all the same.
    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    server = GatewayServer(GatewayConfig(core_target="127.0.0.1:9", http_address="127.0.0.1:0"))
    await server.start()
    try:
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        await server.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_a_stopping_gateway_leaves_a_serving_cores_heap_frozen(tmp_path: Path) -> None:
    """`scriptgen serve` runs both in one process and stops the gateway first."""
    before = gc.get_threshold()
    core = Core(fast_core_config(tmp_path / "core"))
    await core.start()
    try:
        gateway = GatewayServer(
            GatewayConfig(core_target=f"127.0.0.1:{core.grpc_port}", http_address="127.0.0.1:0")
        )
        await gateway.start()
        await gateway.stop()
        assert gc.get_freeze_count() > 10_000  # the core still serves: still frozen
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        await core.stop()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
