"""The script pipeline of one job: plan, write, review, save — each stage announced.

Model calls go through the provider router, each stage along its own chain.
Text deltas go to the event log as they arrive; a provider switch is an event
too. Nothing on this path touches the database until the save stage stores
the whole episode at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from scriptgen.v1 import generation_pb2, project_pb2

from server import fountain, prompts
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.base import Brief, Prompt, Provider
from server.providers.router import ProviderRouter, UsageTotal
from server.store.base import ProjectStore

GenerationEvent = generation_pb2.GenerationEvent
#: A rough episode length used only to estimate write progress.
_EXPECTED_SCRIPT_CHARS = 4000
_PROGRESS_EVERY_CHARS = 500


@dataclass(slots=True)
class PipelineState:
    """What the pipeline has done so far; the runner reads `stage` to decide on cancellation."""

    stage: generation_pb2.Stage.ValueType = generation_pb2.STAGE_UNSPECIFIED
    script_parts: list[str] = field(default_factory=list)
    usage: dict[tuple[str, str], UsageTotal] = field(default_factory=dict)


class Pipeline:
    """Runs the stages of one job, each on its provider chain."""

    def __init__(
        self,
        *,
        brief: Brief,
        generation: str,
        router: ProviderRouter,
        plan_chain: Sequence[Provider],
        write_chain: Sequence[Provider],
        store: ProjectStore,
        events: JobEvents,
        metrics: CoreMetrics,
        deadline: float | None = None,
    ) -> None:
        self._brief = brief
        self._generation = generation
        self._router = router
        self._chains = {
            generation_pb2.STAGE_PLAN: list(plan_chain),
            generation_pb2.STAGE_WRITE: list(write_chain),
        }
        self._deadline = deadline
        self._store = store
        self._events = events
        self._metrics = metrics
        self.state = PipelineState()

    async def _stage(self, stage: generation_pb2.Stage.ValueType) -> None:
        self.state.stage = stage
        chain = self._chains.get(stage, [])
        # The first provider whose breaker would let a call through is the one expected to write.
        first = next((p for p in chain if self._router.breakers[p.name].usable), None)
        first = first or (chain[0] if chain else None)
        await self._events.emit(
            "stage_started",
            GenerationEvent.StageStarted(
                stage=stage,
                provider=first.name if first else "",
                model=first.model if first else "",
            ),
        )

    async def _progress(
        self, stage: generation_pb2.Stage.ValueType, fraction: float, message: str
    ) -> None:
        await self._events.emit(
            "progress", GenerationEvent.Progress(stage=stage, fraction=fraction, message=message)
        )

    async def _switched(self, source: str, target: str, reason: str, offset: int) -> None:
        await self._events.emit(
            "provider_switched",
            GenerationEvent.ProviderSwitched(
                from_provider=source, to_provider=target, reason=reason, offset=offset
            ),
        )

    def _call(
        self, stage: generation_pb2.Stage.ValueType, prompt: Prompt
    ) -> AsyncGenerator[str, None]:
        name = "plan" if stage == generation_pb2.STAGE_PLAN else "write"
        return self._router.stream(
            name,
            prompt,
            self._chains[stage],
            self.state.usage,
            deadline=self._deadline,
            on_switch=self._switched,
        )

    async def _plan(self) -> str:
        await self._stage(generation_pb2.STAGE_PLAN)
        system, user = prompts.render("plan", self._brief)
        prompt = Prompt(generation_pb2.STAGE_PLAN, system, user, self._brief)
        chunks: list[str] = []
        async with aclosing(self._call(generation_pb2.STAGE_PLAN, prompt)) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        outline = "".join(chunks)
        beats = sum(1 for line in outline.splitlines() if line.strip())
        await self._progress(generation_pb2.STAGE_PLAN, 1.0, f"outline of {beats} beats")
        return outline

    async def _write(self, outline: str) -> str:
        await self._stage(generation_pb2.STAGE_WRITE)
        system, user = prompts.render("write", self._brief, outline)
        prompt = Prompt(generation_pb2.STAGE_WRITE, system, user, self._brief, outline)
        offset = 0
        next_progress = _PROGRESS_EVERY_CHARS
        parts = self.state.script_parts
        tick = self._metrics.inter_token_clock("write")
        async with aclosing(self._call(generation_pb2.STAGE_WRITE, prompt)) as stream:
            async for chunk in stream:
                tick()
                await self._events.emit(
                    "text_delta", GenerationEvent.TextDelta(text=chunk, offset=offset)
                )
                parts.append(chunk)
                offset += len(chunk)
                if offset >= next_progress:
                    next_progress += _PROGRESS_EVERY_CHARS
                    fraction = min(0.95, offset / _EXPECTED_SCRIPT_CHARS)
                    await self._progress(
                        generation_pb2.STAGE_WRITE, fraction, f"{offset} characters"
                    )
        script = "".join(parts)
        await self._progress(generation_pb2.STAGE_WRITE, 1.0, f"{offset} characters")
        return script

    async def run(self) -> GenerationEvent.Completed:
        """Run every stage; the Completed payload of the saved episode."""
        outline = await self._plan()
        script = await self._write(outline)

        await self._stage(generation_pb2.STAGE_REVIEW)
        found = fountain.review(script)
        await self._progress(
            generation_pb2.STAGE_REVIEW,
            1.0,
            f"{found.scene_count} scenes, {len(found.cast)} speaking characters,"
            f" {found.word_count} words, {len(found.warnings)} warnings",
        )

        await self._stage(generation_pb2.STAGE_SAVE)
        project_id = self._brief.project.name.removeprefix("projects/")
        episode = await self._store.create_episode(
            project_id,
            project_pb2.Episode(
                title=self._brief.title,
                script=script,
                outline=outline,
                generation=self._generation,
                scene_count=found.scene_count,
                word_count=found.word_count,
                cast=found.cast,
            ),
        )
        await self._progress(generation_pb2.STAGE_SAVE, 1.0, f"saved as episode {episode.number}")
        return GenerationEvent.Completed(
            episode=episode,
            usage=[
                generation_pb2.ProviderUsage(
                    provider=u.provider,
                    model=u.model,
                    input_tokens=u.input_tokens,
                    output_tokens=u.output_tokens,
                )
                for u in self.state.usage.values()
            ],
            quality=generation_pb2.QualityReport(
                scene_count=found.scene_count,
                word_count=found.word_count,
                cast=found.cast,
                warnings=found.warnings,
            ),
        )
