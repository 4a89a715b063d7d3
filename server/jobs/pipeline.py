"""The script pipeline of one job: plan, write, review, save — each stage announced.

Text deltas go to the event log as they arrive; nothing on this path touches
the database until the save stage stores the whole episode at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from scriptgen.v1 import generation_pb2, project_pb2

from server import fountain, prompts
from server.jobs.emitter import JobEvents
from server.metrics import CoreMetrics
from server.providers.base import Brief, Prompt, Provider
from server.providers.synthetic import tokens
from server.store.base import ProjectStore

GenerationEvent = generation_pb2.GenerationEvent
#: A rough episode length used only to estimate write progress.
_EXPECTED_SCRIPT_CHARS = 4000
_PROGRESS_EVERY_CHARS = 500


@dataclass(slots=True)
class _Usage:
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class PipelineState:
    """What the pipeline has done so far; the runner reads `stage` to decide on cancellation."""

    stage: generation_pb2.Stage.ValueType = generation_pb2.STAGE_UNSPECIFIED
    script_parts: list[str] = field(default_factory=list)
    usage: dict[str, _Usage] = field(default_factory=dict)


class Pipeline:
    """Runs the stages of one job against one provider."""

    def __init__(
        self,
        *,
        brief: Brief,
        generation: str,
        provider: Provider,
        store: ProjectStore,
        events: JobEvents,
        metrics: CoreMetrics,
    ) -> None:
        self._brief = brief
        self._generation = generation
        self._provider = provider
        self._store = store
        self._events = events
        self._metrics = metrics
        self.state = PipelineState()

    async def _stage(self, stage: generation_pb2.Stage.ValueType, *, uses_model: bool) -> None:
        self.state.stage = stage
        await self._events.emit(
            "stage_started",
            GenerationEvent.StageStarted(
                stage=stage,
                provider=self._provider.name if uses_model else "",
                model=self._provider.model if uses_model else "",
            ),
        )

    async def _progress(
        self, stage: generation_pb2.Stage.ValueType, fraction: float, message: str
    ) -> None:
        await self._events.emit(
            "progress", GenerationEvent.Progress(stage=stage, fraction=fraction, message=message)
        )

    def _account(self, prompt: Prompt, output: str) -> None:
        usage = self.state.usage.setdefault(
            self._provider.name, _Usage(self._provider.name, self._provider.model)
        )
        spent_in = len(tokens(prompt.system)) + len(tokens(prompt.user))
        spent_out = len(tokens(output))
        usage.input_tokens += spent_in
        usage.output_tokens += spent_out
        self._metrics.tokens.labels(self._provider.name, "in").inc(spent_in)
        self._metrics.tokens.labels(self._provider.name, "out").inc(spent_out)

    async def _plan(self) -> str:
        await self._stage(generation_pb2.STAGE_PLAN, uses_model=True)
        system, user = prompts.render("plan", self._brief)
        prompt = Prompt(generation_pb2.STAGE_PLAN, system, user, self._brief)
        started = time.monotonic()
        chunks: list[str] = []
        async for chunk in self._provider.stream(prompt):
            if not chunks:
                self._metrics.time_to_first_token.labels(self._provider.name, "plan").observe(
                    time.monotonic() - started
                )
            chunks.append(chunk)
        outline = "".join(chunks)
        self._account(prompt, outline)
        beats = sum(1 for line in outline.splitlines() if line.strip())
        await self._progress(generation_pb2.STAGE_PLAN, 1.0, f"outline of {beats} beats")
        return outline

    async def _write(self, outline: str) -> str:
        await self._stage(generation_pb2.STAGE_WRITE, uses_model=True)
        system, user = prompts.render("write", self._brief, outline)
        prompt = Prompt(generation_pb2.STAGE_WRITE, system, user, self._brief, outline)
        started = time.monotonic()
        offset = 0
        next_progress = _PROGRESS_EVERY_CHARS
        parts = self.state.script_parts
        async for chunk in self._provider.stream(prompt):
            if not chunk:
                continue
            if not parts:
                self._metrics.time_to_first_token.labels(self._provider.name, "write").observe(
                    time.monotonic() - started
                )
            await self._events.emit(
                "text_delta", GenerationEvent.TextDelta(text=chunk, offset=offset)
            )
            parts.append(chunk)
            offset += len(chunk)
            if offset >= next_progress:
                next_progress += _PROGRESS_EVERY_CHARS
                fraction = min(0.95, offset / _EXPECTED_SCRIPT_CHARS)
                await self._progress(generation_pb2.STAGE_WRITE, fraction, f"{offset} characters")
        script = "".join(parts)
        self._account(prompt, script)
        await self._progress(generation_pb2.STAGE_WRITE, 1.0, f"{offset} characters")
        return script

    async def run(self) -> GenerationEvent.Completed:
        """Run every stage; the Completed payload of the saved episode."""
        outline = await self._plan()
        script = await self._write(outline)

        await self._stage(generation_pb2.STAGE_REVIEW, uses_model=False)
        found = fountain.review(script)
        await self._progress(
            generation_pb2.STAGE_REVIEW,
            1.0,
            f"{found.scene_count} scenes, {len(found.cast)} speaking characters,"
            f" {found.word_count} words, {len(found.warnings)} warnings",
        )

        await self._stage(generation_pb2.STAGE_SAVE, uses_model=False)
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
