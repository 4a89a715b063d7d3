"""A serving core keeps its start-up heap out of garbage collections, and gives it back on stop."""

from __future__ import annotations

import gc
from pathlib import Path

from server import Core
from tests.conftest import fast_core_config


async def test_the_start_up_heap_is_frozen_while_the_core_serves(tmp_path: Path) -> None:
    core = Core(fast_core_config(tmp_path / "core"))
    await core.start()
    try:
        # Everything alive at start (modules, stores, gRPC): not walked by any collection.
        assert gc.get_freeze_count() > 10_000
    finally:
        await core.stop()
    assert gc.get_freeze_count() == 0
