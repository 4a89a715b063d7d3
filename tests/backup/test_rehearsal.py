"""The restore rehearsal: back up a filled core, wipe it, restore, and time the recovery.

Recovery time is measured from the start of `restore_backup` to the restored
core answering SERVING on grpc.health.v1 — what an operator waits for.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2

from server import Core
from server.backup import Stores, create_backup, restore_backup
from tests.backup.conftest import Filled
from tests.backup.stories import holdings
from tests.server.rpc import health_check

#: What the README promises for a small data dir, with room for slow CI machines.
RECOVERY_BUDGET_SECONDS = 30.0


async def _until_serving(target: str) -> None:
    async with aio.insecure_channel(target) as channel:
        check = health_check(channel)
        while True:
            answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.01)


async def test_restore_rehearsal(
    filled: Filled, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    await create_backup(tmp_path / "nightly", filled.stores)
    shutil.rmtree(filled.config.data_dir)  # the disaster

    started = time.monotonic()
    await restore_backup(tmp_path / "nightly", Stores.from_config(filled.config))
    core = Core(filled.config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        await asyncio.wait_for(_until_serving(target), RECOVERY_BUDGET_SECONDS)
        recovery_seconds = time.monotonic() - started
        assert await holdings(target) == filled.holdings
    finally:
        await core.stop()

    record_property("recovery_seconds", round(recovery_seconds, 3))
    print(f"\nrecovery time (restore start to SERVING): {recovery_seconds:.3f} s")
    assert recovery_seconds < RECOVERY_BUDGET_SECONDS
