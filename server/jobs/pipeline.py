"""The script pipeline of one job: plan, write, review, save, index — each stage announced.

* plan: read the latest episodes' outlines and retrieve story knowledge (each
  within a token budget), then draft the beat outline;
* write: stream the screenplay in Fountain as TextDeltas, the model's chunks joined by a
  short time window (`server.jobs.coalescer`; the first chunk goes out at once);
* review: check the Fountain structure and count (`server.fountain`); a script
  that fails the verdict fails the job (FAILED_PRECONDITION, SCRIPT_REJECTED)
  and nothing is saved; with the `polish` feature flag a polish call adds
  notes on dialogue, tension and twist to the quality report — the streamed
  script is never rewritten, so the deltas still add up to the saved script;
* save: store the episode under the next number, with its outline, counts,
  quality report, provider usage and the exact prompts sent (prompt snapshot);
* index: embed the saved episode into the story knowledge for later episodes.
  The episode is saved by then, so a failure here is reported in a Progress
  event and the job still completes; so does a job whose indexing is dropped at
  shutdown (`skip_indexing`).

Model calls go through the provider router, each stage along its own chain.
Nothing on this path touches the database until the save stage stores the
whole episode at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from scriptgen.v1 import generation_pb2, project_pb2

from server import fountain, prompts
from server.errors import FailedPrecondition
from server.jobs.coalescer import DeltaCoalescer
from server.jobs.emitter import JobEvents
from server.jobs.story_context import ContextBudget, KnowledgeBase, gather
from server.left_tasks import leave
from server.metrics import CoreMetrics
from server.providers.base import Brief, Prompt, Provider
from server.providers.body_pacing import paced_reads
from server.providers.router import ProviderRouter, UsageTotal
from server.store.base import ProjectStore

log = logging.getLogger(__name__)
GenerationEvent = generation_pb2.GenerationEvent
#: Script characters per minute of running time, only to estimate write progress.
_CHARS_PER_MINUTE = 1800
_PROGRESS_EVERY_CHARS = 500
#: The metric/log name of each model-calling step.
_STEP_NAMES = {generation_pb2.STAGE_PLAN: "plan", generation_pb2.STAGE_WRITE: "write"}


@dataclass(slots=True)
class PipelineState:
    """What the pipeline has done so far; the runner reads `stage` to decide on cancellation."""

    stage: generation_pb2.Stage.ValueType = generation_pb2.STAGE_UNSPECIFIED
    script_parts: list[str] = field(default_factory=list)
    usage: dict[tuple[str, str], UsageTotal] = field(default_factory=dict)
    prompts: list[prompts.RenderedPrompt] = field(default_factory=list)

    @property
    def committed(self) -> bool:
        """Whether saving began: from here on the job completes rather than cancels."""
        return self.stage in (generation_pb2.STAGE_SAVE, generation_pb2.STAGE_INDEX)


def script_rejected(found: fountain.ScriptReview) -> FailedPrecondition:
    """The job's error when review rejects the written script."""
    return FailedPrecondition(
        "the written script failed review: " + "; ".join(found.rejections),
        reason="SCRIPT_REJECTED",
        metadata={"problems": "; ".join(found.rejections)},
    )


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
        knowledge: KnowledgeBase | None = None,
        polish: bool = False,
        budget: ContextBudget | None = None,
        delta_window_seconds: float = 0.0,
    ) -> None:
        self._brief = brief
        self._generation = generation
        self._router = router
        self._chains = {
            generation_pb2.STAGE_PLAN: list(plan_chain),
            generation_pb2.STAGE_WRITE: list(write_chain),
            # The polish pass is a writer's job: it runs on the write chain.
            generation_pb2.STAGE_REVIEW: list(write_chain),
        }
        self._deadline = deadline
        self._store = store
        self._events = events
        self._metrics = metrics
        self._knowledge = knowledge
        self._polish = polish
        self._budget = budget or ContextBudget()
        self._project_id = brief.project.name.removeprefix("projects/")
        self._delta_window = delta_window_seconds
        self._deltas: DeltaCoalescer | None = None
        self.state = PipelineState()
        #: Set at shutdown (`skip_indexing`): the saved episode is not indexed, or no longer.
        self._skip_index = asyncio.Event()

    def skip_indexing(self) -> None:
        """Index no more (shutdown): a job that has saved its episode completes at once,
        its episode not indexed, as when indexing fails (later episodes miss it in
        retrieval); it never ends as if nothing had been saved."""
        self._skip_index.set()

    async def _stage(self, stage: generation_pb2.Stage.ValueType) -> None:
        self.state.stage = stage
        reviewing = stage == generation_pb2.STAGE_REVIEW and not self._polish
        chain = [] if reviewing else self._chains.get(stage, [])
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
        if self._deltas is not None:
            await self._deltas.flush()  # the switch follows the text delivered before it
        await self._events.emit(
            "provider_switched",
            GenerationEvent.ProviderSwitched(
                from_provider=source, to_provider=target, reason=reason, offset=offset
            ),
        )

    def _call(
        self, stage: generation_pb2.Stage.ValueType, rendered: prompts.RenderedPrompt, **extra: str
    ) -> AsyncGenerator[str, None]:
        self.state.prompts.append(rendered)
        prompt = Prompt(stage, rendered.system, rendered.user, self._brief, **extra)
        return self._router.stream(
            _STEP_NAMES.get(stage, rendered.stage),
            prompt,
            self._chains[stage],
            self.state.usage,
            deadline=self._deadline,
            on_switch=self._switched,
        )

    async def _collect(
        self, stage: generation_pb2.Stage.ValueType, rendered: prompts.RenderedPrompt, **extra: str
    ) -> str:
        chunks: list[str] = []
        async with aclosing(self._call(stage, rendered, **extra)) as stream:
            async for chunk in stream:
                chunks.append(chunk)
        return "".join(chunks)

    async def _plan(self) -> str:
        await self._stage(generation_pb2.STAGE_PLAN)
        query = "\n".join(part for part in (self._brief.title, self._brief.description) if part)
        context, passages, earlier = await gather(
            store=self._store,
            knowledge=self._knowledge,
            project_id=self._project_id,
            query=query,
            budget=self._budget,
        )
        await self._progress(
            generation_pb2.STAGE_PLAN,
            0.2,
            f"{passages} knowledge passages, {earlier} earlier episodes",
        )
        rendered = prompts.render("plan", self._brief, context=context)
        outline = await self._collect(generation_pb2.STAGE_PLAN, rendered)
        beats = sum(1 for line in outline.splitlines() if line.strip())
        await self._progress(generation_pb2.STAGE_PLAN, 1.0, f"outline of {beats} beats")
        return outline

    async def _write(self, outline: str) -> str:
        await self._stage(generation_pb2.STAGE_WRITE)
        rendered = prompts.render("write", self._brief, outline=outline)
        expected = prompts.target_minutes(self._brief.project) * _CHARS_PER_MINUTE
        offset = 0
        next_progress = _PROGRESS_EVERY_CHARS
        parts = self.state.script_parts
        tick = self._metrics.inter_token_clock("write")
        deltas = self._deltas = DeltaCoalescer(self._events, self._delta_window)
        try:
            with paced_reads(deltas):
                async with aclosing(
                    self._call(generation_pb2.STAGE_WRITE, rendered, outline=outline)
                ) as stream:
                    async for chunk in stream:
                        tick()
                        await deltas.add(chunk)
                        parts.append(chunk)
                        offset += len(chunk)
                        if offset >= next_progress:
                            next_progress += _PROGRESS_EVERY_CHARS
                            fraction = min(0.95, offset / expected)
                            # Progress counts text the readers already have.
                            await deltas.flush()
                            await self._progress(
                                generation_pb2.STAGE_WRITE, fraction, f"{offset} characters"
                            )
            await deltas.close()
        finally:
            deltas.abort()
            self._deltas = None
        script = "".join(parts)
        await self._progress(generation_pb2.STAGE_WRITE, 1.0, f"{offset} characters")
        return script

    async def _review(self, outline: str, script: str) -> project_pb2.QualityReport:
        await self._stage(generation_pb2.STAGE_REVIEW)
        found = fountain.review(script)
        summary = (
            f"{found.scene_count} scenes, {len(found.cast)} speaking characters,"
            f" {found.word_count} words, {len(found.warnings)} warnings"
        )
        if not found.passed:
            await self._progress(generation_pb2.STAGE_REVIEW, 1.0, f"rejected: {summary}")
            raise script_rejected(found)
        quality = project_pb2.QualityReport(
            scene_count=found.scene_count,
            word_count=found.word_count,
            cast=found.cast,
            warnings=found.warnings,
            character_count=len(found.cast),
            dialogue_count=found.dialogue_count,
            transition_count=found.transition_count,
            empty_cue_count=found.empty_cue_count,
            estimated_minutes=found.estimated_minutes,
            target_minutes=prompts.target_minutes(self._brief.project),
        )
        if self._polish:
            await self._progress(generation_pb2.STAGE_REVIEW, 0.5, f"{summary}; polishing")
            rendered = prompts.render("polish", self._brief, outline=outline, script=script)
            notes = await self._collect(generation_pb2.STAGE_REVIEW, rendered, outline=outline)
            quality.polished = True
            quality.polish_notes = notes.strip()
        await self._progress(generation_pb2.STAGE_REVIEW, 1.0, summary)
        return quality

    def _usage(self) -> list[project_pb2.ProviderUsage]:
        return [
            project_pb2.ProviderUsage(
                provider=u.provider,
                model=u.model,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
            )
            for u in self.state.usage.values()
        ]

    async def _save(
        self, outline: str, script: str, quality: project_pb2.QualityReport
    ) -> project_pb2.Episode:
        await self._stage(generation_pb2.STAGE_SAVE)
        episode = await self._store.create_episode(
            self._project_id,
            project_pb2.Episode(
                title=self._brief.title,
                script=script,
                outline=outline,
                generation=self._generation,
                scene_count=quality.scene_count,
                word_count=quality.word_count,
                cast=quality.cast,
                character_count=quality.character_count,
                usage=self._usage(),
                prompt_snapshot=project_pb2.PromptSnapshot(
                    template_version=prompts.PROMPT_VERSION,
                    prompts=[rendered.snapshot() for rendered in self.state.prompts],
                ),
                quality=quality,
            ),
        )
        await self._progress(generation_pb2.STAGE_SAVE, 1.0, f"saved as episode {episode.number}")
        return episode

    async def _index(self, episode: project_pb2.Episode) -> None:
        await self._stage(generation_pb2.STAGE_INDEX)
        if self._knowledge is None:
            await self._progress(
                generation_pb2.STAGE_INDEX, 1.0, "no story knowledge on this core: not indexed"
            )
            return
        try:
            indexed = await self._indexed(episode)
        except Exception as error:
            # The episode is saved; later episodes just miss it in retrieval. Say so, go on.
            log.warning("%s: indexing %s failed: %s", self._generation, episode.name, error)
            await self._progress(
                generation_pb2.STAGE_INDEX, 1.0, f"not indexed: {error or type(error).__name__}"
            )
            return
        if not indexed:
            await self._progress(
                generation_pb2.STAGE_INDEX, 1.0, "not indexed: the server is shutting down"
            )
            return
        await self._progress(generation_pb2.STAGE_INDEX, 1.0, f"indexed {episode.name}")

    async def _indexed(self, episode: project_pb2.Episode) -> bool:
        """Index `episode`; False when `skip_indexing` came first (the indexing is dropped)."""
        assert self._knowledge is not None
        if self._skip_index.is_set():
            return False
        indexing = asyncio.ensure_future(self._knowledge.index_episode(self._project_id, episode))
        skipping = asyncio.ensure_future(self._skip_index.wait())
        try:
            await asyncio.wait((indexing, skipping), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            _drop(indexing)  # this job was cancelled
            raise
        finally:
            skipping.cancel()
        if not indexing.done():
            _drop(indexing)  # skipped
            return False
        indexing.result()  # its error, if it failed
        return True

    async def run(self) -> GenerationEvent.Completed:
        """Run every stage; the Completed payload of the saved episode."""
        outline = await self._plan()
        script = await self._write(outline)
        quality = await self._review(outline, script)
        episode = await self._save(outline, script, quality)
        await self._index(episode)
        return GenerationEvent.Completed(episode=episode, usage=episode.usage, quality=quality)


def _drop(indexing: asyncio.Future[None]) -> None:
    """Cancel an indexing nobody waits for any more (its outcome is still read)."""
    leave(indexing, "an indexing dropped")
    indexing.cancel()
