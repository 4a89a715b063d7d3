"""Coalescing text into TextDeltas by a time window keeps the text and its offsets exact."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import replace
from pathlib import Path

from scriptgen.v1 import generation_pb2, project_service_pb2

from server import Core, SyntheticConfig
from server.delta_grid import GRID_PHASES
from server.events import MemoryEventLog
from server.jobs.coalescer import DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.synthetic import tokens
from tests.conftest import fast_core_config
from tests.server.rpc import connect, script_of
from tests.sharing import MACHINE

pytestmark = MACHINE

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


class _CutTimes(MemoryEventLog):
    """An in-memory log that notes the loop time of each append (each cut) per generation."""

    def __init__(self) -> None:
        super().__init__()
        self.cuts: dict[str, list[float]] = {}

    def _store(self, event: generation_pb2.GenerationEvent) -> None:
        # Every append ends here, awaited or at once from a timed cut (`emit_now`).
        self.cuts.setdefault(event.generation, []).append(asyncio.get_running_loop().time())
        super()._store(event)


async def test_timed_cuts_fall_on_a_grid_every_stream_shares() -> None:
    window = 0.6  # wide, so a loaded machine's late timers stay well within a grid step
    step = window / GRID_PHASES
    log = _CutTimes()
    loop = asyncio.get_running_loop()
    added: dict[str, list[float]] = {}

    async def stream(name: str, start_after: float) -> None:
        await log.create(name)
        deltas = DeltaCoalescer(JobEvents(name, log, CoreMetrics(), 0), window)
        await asyncio.sleep(start_after)
        for index in range(100):  # a token every 30 ms, as a model at ~30 tok/s
            added.setdefault(name, []).append(loop.time())
            await deltas.add(f"{name[-1]}{index} ")
            await asyncio.sleep(0.03)
        await deltas.close()

    # Stream a starts mid-way between two grid points, where a cut one window after its
    # first would also fall unless the cuts keep to the grid; stream b a window and 20 ms
    # later, in the same cohort.
    await asyncio.sleep((step / 2 - loop.time() % step) % step)
    await asyncio.gather(stream("generations/ga", 0.0), stream("generations/gb", window + 0.02))
    points: dict[str, list[int]] = {}
    for name, cuts in log.cuts.items():
        # The first cut is at once, the next may be early (its due point was already near),
        # the last is the close; every other cut comes just after a point of the shared grid
        # (or a moment before: a chunk due within EARLY_SECONDS of it goes at once).
        timed = cuts[2:-1]
        assert len(timed) >= 2, (name, cuts)
        for cut in timed:
            phase = cut % step
            assert phase < step / 3 or phase > step - 0.0025, (name, cut, phase)
        points[name] = [math.floor(cut / step + 0.1) for cut in timed]
        # A steady stream cuts once per window, every GRID_PHASES points of the grid,
        assert {b - a for a, b in itertools.pairwise(points[name])} == {GRID_PHASES}, points
        # and no chunk waits longer than one window (and a timer's lateness).
        for when in added[name]:
            cut = next(c for c in cuts if c >= when)
            assert cut - when <= window + step / 3, (name, when, cuts)
    # So streams started apart cut in the same instants.
    assert len(set(points["generations/ga"]) & set(points["generations/gb"])) >= 2, points


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
