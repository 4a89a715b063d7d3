"""Coalescing text into TextDeltas by a time window keeps the text and its offsets exact."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from scriptgen.v1 import generation_pb2, project_service_pb2

from server import Core, SyntheticConfig
from server.events import MemoryEventLog
from server.jobs.coalescer import DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.synthetic import tokens
from tests.conftest import fast_core_config
from tests.server.rpc import connect, script_of

GENERATION = "generations/gcoalesce"


async def _events(window: float) -> tuple[MemoryEventLog, DeltaCoalescer]:
    log = MemoryEventLog()
    await log.create(GENERATION)
    emitter = JobEvents(GENERATION, log, CoreMetrics(), heartbeat_seconds=0)
    return log, DeltaCoalescer(emitter, window)


async def _deltas(log: MemoryEventLog) -> list[generation_pb2.GenerationEvent.TextDelta]:
    events = []
    async for event in log.follow(GENERATION, 0):
        events.append(event.text_delta)
        if len(events) == await log.last_sequence(GENERATION):
            break
    return events


async def test_first_chunk_goes_out_at_once_and_the_rest_by_window() -> None:
    log, deltas = await _events(window=0.2)
    chunks = ["INT. ", "ROOF", "TOP ", "- ", "NIGHT\n", "\n", "마야", "가 ", "웃는다.\n"]
    await deltas.add(chunks[0])
    assert await log.last_sequence(GENERATION) == 1  # not held back by the window
    for chunk in chunks[1:]:
        await deltas.add(chunk)
    assert await log.last_sequence(GENERATION) == 1  # the rest waits for the window
    await deltas.close()
    found = await _deltas(log)
    assert [d.text for d in found] == [chunks[0], "".join(chunks[1:])]
    assert [d.offset for d in found] == [0, len(chunks[0])]


async def test_pending_text_goes_out_when_the_window_ends_without_more_chunks() -> None:
    log, deltas = await _events(window=0.05)
    await deltas.add("one ")
    await deltas.add("two ")
    await asyncio.sleep(0.2)
    assert await log.last_sequence(GENERATION) == 2  # the timed cut, no new chunk needed
    await deltas.add("three")  # after a quiet spell: at once again
    assert await log.last_sequence(GENERATION) == 3
    await deltas.close()
    found = await _deltas(log)
    assert "".join(d.text for d in found) == "one two three"
    assert [d.offset for d in found] == [0, 4, 8]


async def test_window_zero_is_one_delta_per_chunk() -> None:
    log, deltas = await _events(window=0)
    chunks = [f"w{i} " for i in range(50)]
    for chunk in chunks:
        await deltas.add(chunk)
    await deltas.close()
    found = await _deltas(log)
    assert [d.text for d in found] == chunks


async def test_offsets_stay_exact_under_many_small_chunks() -> None:
    log, deltas = await _events(window=0.01)
    chunks = [f"{'가나다'[i % 3]}{i}\n" if i % 7 else "" for i in range(400)]
    for index, chunk in enumerate(chunks):
        await deltas.add(chunk)
        if index % 40 == 0:
            await asyncio.sleep(0.015)
    await deltas.close()
    found = await _deltas(log)
    assert "".join(d.text for d in found) == "".join(chunks)
    offset = 0
    for delta in found:
        assert delta.offset == offset and delta.text
        offset += len(delta.text)
    assert 1 < len(found) < sum(1 for c in chunks if c)


async def _generate(
    tmp_path: Path, window: float
) -> tuple[list[generation_pb2.GenerationEvent], str]:
    config = replace(
        fast_core_config(tmp_path / f"core-{window}"),
        metrics_address=None,
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=400.0),
        delta_window_seconds=window,
    )
    core = Core(config)
    await core.start()
    try:
        async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
            project = await rpc.create_project()
            events = await rpc.generate(project.name, "Windowed")
            saved = await rpc.projects.GetEpisode(
                project_service_pb2.GetEpisodeRequest(name=events[-1].completed.episode.name)
            )
            return events, saved.episode.script
    finally:
        await core.stop()


async def test_coalesced_stream_spells_the_saved_script_in_fewer_events(tmp_path: Path) -> None:
    naive, naive_script = await _generate(tmp_path, 0.0)
    joined, joined_script = await _generate(tmp_path, 0.05)
    for events, script in ((naive, naive_script), (joined, joined_script)):
        assert script_of(events) == script
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        offset = 0
        for event in events:
            if event.HasField("text_delta"):
                assert event.text_delta.offset == offset
                offset += len(event.text_delta.text)
    # The synthetic writer streams one word-sized token per chunk.
    assert _delta_count(naive) == len(tokens(naive_script))
    assert _delta_count(joined) * 3 < len(tokens(joined_script))


def _delta_count(events: list[generation_pb2.GenerationEvent]) -> int:
    return sum(event.HasField("text_delta") for event in events)
