"""The knowledge readiness probe answers while the jobs' Chroma calls keep every worker busy.

Under load (the soak at half capacity) the jobs' reads and writes queue on the four
worker threads; a heartbeat queued behind them timed out after 4 s and readiness
flapped though Chroma itself answered at once. The probe has a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from server.knowledge import HashingEmbedder
from server.knowledge.chroma import ChromaCollection, embedded_client


async def test_the_heartbeat_does_not_wait_behind_busy_workers(tmp_path: Path) -> None:
    collection = ChromaCollection(embedded_client(tmp_path / "chroma"), HashingEmbedder())
    release = threading.Event()
    try:
        await collection.heartbeat()  # opens the client and the collection

        def busy() -> None:
            release.wait(10)

        # Every data worker taken, and more calls waiting behind them.
        queued = [asyncio.create_task(collection._run(busy)) for _ in range(8)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        async with asyncio.timeout(2):
            await collection.heartbeat()
        assert time.monotonic() - started < 1.0
        assert not any(task.done() for task in queued)  # they were busy all along
        release.set()
        await asyncio.gather(*queued)
    finally:
        release.set()
        await collection.close()
