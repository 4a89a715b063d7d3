"""Item 8: twice the admitted capacity offered at once to a real `scriptgen server`.

The core runs with admission control at CAPACITY streams (`--max-streams`) and a
synthetic writer paced at 30 tokens/s. First one stream alone gives the baseline
rate; then CAPACITY streams are opened, and once all of them are writing another
CAPACITY are offered at once. Expected: every one of those is refused at once with
RESOURCE_EXHAUSTED (reason OVER_CAPACITY, a RetryInfo: retryable) and starts no job;
the admitted streams keep the baseline rate; once they end, a retry is admitted.
The second test offers all 2 x CAPACITY in the same instant: exactly CAPACITY are
admitted (a stream takes its slot before its first await), the rest refused alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc import aio
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from tests.replicas.cluster import CORE_LINE, Process, spawn
from tests.server.rpc import Stubs, connect, error_info, rich_status
from tests.sharing import MACHINE

pytestmark = MACHINE

CAPACITY = 100
PACE = 30.0  # tokens per second per stream


async def _stream(
    rpc: Stubs, parent: str, title: str, writing: asyncio.Semaphore | None = None
) -> tuple[str, float, float]:
    """("ok", characters/s first delta to last, 0) or (reason, 0, seconds to the refusal).

    `writing` is released once the stream has its first text.
    """
    started = time.monotonic()
    first = last = 0.0
    chars = first_chars = 0
    try:
        async for response in rpc.generations.GenerateScript(
            gs.GenerateScriptRequest(parent=parent, title=title)
        ):
            if response.event.HasField("text_delta"):
                if not first and writing is not None:
                    writing.release()
                last = time.monotonic()
                if not first:
                    first, first_chars = last, len(response.event.text_delta.text)
                chars += len(response.event.text_delta.text)
            if response.event.HasField("completed"):
                # The writing rate, first delta to last: saving and indexing come after.
                return "ok", (chars - first_chars) / max(last - first, 1e-3), 0.0
    except aio.AioRpcError as error:
        return _refusal(error, time.monotonic() - started)
    raise AssertionError("a stream ended without a terminal event")


def _refusal(error: aio.AioRpcError, elapsed: float) -> tuple[str, float, float]:
    """A refused stream's reason and delay, once it is checked to be retryable."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in rich_status(error).details)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    return error_info(error).reason, 0.0, elapsed


async def _limited_core(tmp_path: Path) -> Process:
    """A real `scriptgen server` admitting CAPACITY streams, writing at PACE tokens/s."""
    return await spawn(
        "server",
        "--grpc-address=127.0.0.1:0",
        "--metrics-address=off",
        "--auth=disabled",
        f"--data-dir={tmp_path / 'core'}",
        "--synthetic-first-token-seconds=0.05",
        f"--synthetic-tokens-per-second={PACE}",
        f"--max-streams={CAPACITY}",
        "--heartbeat-seconds=1",
        "--shutdown-grace-seconds=0.5",
        pattern=CORE_LINE,
    )


async def test_twice_the_capacity_is_refused_fast_and_the_admitted_keep_their_rate(
    tmp_path: Path,
) -> None:
    core = await _limited_core(tmp_path)
    try:
        async with connect(core.address) as rpc:
            project = await rpc.create_project()
            _, alone, _ = await asyncio.wait_for(_stream(rpc, project.name, "Alone"), 60)
            writing = asyncio.Semaphore(0)
            admitted_tasks = [
                asyncio.create_task(_stream(rpc, project.name, f"Load {n}", writing))
                for n in range(CAPACITY)
            ]
            async with asyncio.timeout(60):
                for _ in range(CAPACITY):
                    await writing.acquire()
            over = await asyncio.wait_for(
                asyncio.gather(*(_stream(rpc, project.name, f"Over {n}") for n in range(CAPACITY))),
                30,
            )
            results = [*await asyncio.wait_for(asyncio.gather(*admitted_tasks), 90), *over]
            retried = await asyncio.wait_for(_stream(rpc, project.name, "Retry"), 60)
            listed = await rpc.projects.ListEpisodes(
                ps.ListEpisodesRequest(parent=project.name, page_size=1000)
            )
    finally:
        await core.stop()
    admitted = [rate for outcome, rate, _ in results if outcome == "ok"]
    refusals = sorted(seconds for outcome, _, seconds in results if outcome != "ok")
    reasons = {outcome for outcome, _, _ in results if outcome != "ok"}
    p95 = refusals[int(0.95 * (len(refusals) - 1))] if refusals else 0.0
    print(
        f"overload: {2 * CAPACITY} offered at max-streams {CAPACITY}: {len(admitted)} admitted,"
        f" {len(refusals)} refused {reasons}, refusal p95 {p95 * 1000:.0f} ms;"
        f" chars/s alone {alone:.1f}, admitted median {statistics.median(admitted):.1f}"
        f" min {min(admitted):.1f}"
    )
    assert len(admitted) == CAPACITY and len(refusals) == CAPACITY
    assert reasons == {"OVER_CAPACITY"}
    assert p95 < 1.0  # refused at once, not after queueing behind the admitted
    assert statistics.median(admitted) >= 0.85 * alone  # 2 shared cores: some noise
    assert retried[0] == "ok"
    assert len(listed.episodes) == 1 + CAPACITY + 1  # refused streams started no job


async def test_a_burst_of_twice_the_capacity_is_refused_fast_and_the_admitted_keep_their_rate(
    tmp_path: Path,
) -> None:
    core = await _limited_core(tmp_path)
    try:
        async with connect(core.address) as rpc:
            project = await rpc.create_project()
            _, alone, _ = await asyncio.wait_for(_stream(rpc, project.name, "Alone"), 60)
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(_stream(rpc, project.name, f"Load {n}") for n in range(2 * CAPACITY))
                ),
                90,
            )
            retried = await asyncio.wait_for(_stream(rpc, project.name, "Retry"), 60)
            listed = await rpc.projects.ListEpisodes(
                ps.ListEpisodesRequest(parent=project.name, page_size=1000)
            )
    finally:
        await core.stop()
    admitted = [rate for outcome, rate, _ in results if outcome == "ok"]
    refusals = sorted(seconds for outcome, _, seconds in results if outcome != "ok")
    reasons = {outcome for outcome, _, _ in results if outcome != "ok"}
    p95 = refusals[int(0.95 * (len(refusals) - 1))] if refusals else 0.0
    print(
        f"overload: {2 * CAPACITY} offered at max-streams {CAPACITY}: {len(admitted)} admitted,"
        f" {len(refusals)} refused {reasons}, refusal p95 {p95 * 1000:.0f} ms;"
        f" chars/s alone {alone:.1f}, admitted median {statistics.median(admitted):.1f}"
        f" min {min(admitted):.1f}"
    )
    assert len(admitted) == CAPACITY and len(refusals) == CAPACITY
    assert reasons == {"OVER_CAPACITY"}
    # Refused at once, not after queueing behind the admitted (each writes for ~6 s): 200
    # calls from one client process in the same instant, with every admitted job starting its
    # plan stage on embedded Chroma, which holds the GIL (RELIABILITY Known gap 9), gave
    # refusal p95 0.4-1.7 s on the 2-core machine, the same for the tree of session 3.
    assert p95 < 2.5
    assert statistics.median(admitted) >= 0.9 * alone
    assert retried[0] == "ok"
    assert len(listed.episodes) == 1 + CAPACITY + 1  # refused streams started no job
