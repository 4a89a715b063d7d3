"""The job runner: starts generation jobs detached from any connection, cancels and drains them.

A job's task belongs to the runner, not to the call that started it: a caller
that goes away leaves the job running, and any number of readers follow its
event log. Every job ends with exactly one terminal event, whatever happens: its
own, or, when its core stopped without writing it (killed, or a shutdown that could
not wait for it), one written by the next core to meet it (`end_orphan`; with Redis).
A job that stopped alive but without its end (its lease was lost, or Redis refused
the end) is ended by its own core a lease period later, unless another core did;
one whose log a Redis failover rolled back ends with `failed` (EVENT_LOG_LOST).
The registry says what the log's terminal event says, whichever core wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from scriptgen.v1 import generation_pb2, generation_service_pb2, project_pb2

from server import limits
from server.auth.records import DEFAULT_TENANT
from server.config import CoreConfig
from server.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    Internal,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
    invalid,
)
from server.events import (
    TERMINAL_KINDS,
    EventLog,
    EventLogBehind,
    EventLogConflict,
    LeaseFenced,
    LeaseTaken,
)
from server.jobs.arrivals import Arrivals
from server.jobs.coordination import Coordination, LeaseLoss, MemoryCoordination
from server.jobs.emitter import JobEvents
from server.jobs.pipeline import Pipeline
from server.jobs.registry import JobRegistry
from server.jobs.story_context import KnowledgeBase
from server.jobs.watch import JobWatch
from server.metrics import CoreMetrics
from server.providers.base import Brief, Provider
from server.providers.factory import StageProviders
from server.providers.router import ProviderRouter
from server.providers.selection import DEFAULT_ROUTING, DISABLED_KEY, RequestRouting
from server.ratelimit.budget import TokenBudget
from server.store.base import ProjectStore

log = logging.getLogger(__name__)
GenerationEvent = generation_pb2.GenerationEvent
SYNTHETIC_NOTICE = (
    "No language-model provider is configured: the offline synthetic writer writes this episode."
)
#: How long CancelGeneration waits for a job to reach its terminal event: one on another
#: core, or one of this core that was already saving its episode (it is not cut short).
CANCEL_WAIT_SECONDS = 5.0
#: How long a cancelled job of this core gets to stop before it is cancelled again, and how
#: many times it is: a cancellation can be swallowed on the way (Python 3.11's
#: `asyncio.wait_for`, in a library, returns a result that came with the cancellation).
RECANCEL_AFTER_SECONDS = 1.0
CANCEL_ATTEMPTS = 5
#: At shutdown, how long the jobs still running after the grace get, all together, to end:
#: their cancellations (CANCEL_ATTEMPTS times RECANCEL_AFTER_SECONDS at most) and a save or
#: terminal event already under way. Past it the core stops without them; with Redis,
#: the next core to meet one after its lease lapses ends it (JOB_OWNER_LOST).
SHUTDOWN_CANCEL_SECONDS = 10.0
#: … of which a job indexing its saved episode gets this long to finish it; then the
#: indexing is dropped and the job completes without it (`Pipeline.skip_indexing`).
SHUTDOWN_INDEX_SECONDS = 3.0
#: A job of this core that stopped without its end (its lease was taken, or the log could not
#: take the end) is looked at this many times, one owner lease apart, and ended here if no
#: other core ended it: the core that took its lease may have given up, failed or died.
END_LATER_ATTEMPTS = 5
#: Writing a job's end after its log moved on is tried again after this pause, doubling up
#: to END_RETRY_CAP_SECONDS, while this core's lease on the job lasts.
END_RETRY_SECONDS = 0.05
END_RETRY_CAP_SECONDS = 1.0
_STATE_OF_END = {
    "completed": generation_pb2.GENERATION_STATE_SUCCEEDED,
    "failed": generation_pb2.GENERATION_STATE_FAILED,
    "cancelled": generation_pb2.GENERATION_STATE_CANCELLED,
}
_LOSS = {
    "taken": "another core took its lease",
    "ended": "its lease lapsed and another core ended its log",
    "vanished": "its lease lapsed and its event log vanished from Redis",
}
_ENDED_STATES = frozenset(
    {
        generation_pb2.GENERATION_STATE_SUCCEEDED,
        generation_pb2.GENERATION_STATE_FAILED,
        generation_pb2.GENERATION_STATE_CANCELLED,
    }
)


@dataclass(slots=True)
class _Job:
    generation: generation_pb2.Generation
    events: JobEvents
    pipeline: Pipeline
    #: Who started the job and a hash of their request: a repeat of it finds the job here.
    tenant: str = DEFAULT_TENANT
    fingerprint: str = ""
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    cancel_reason: str = ""
    #: Why the job failed (the error's reason), for its last log line.
    failure: str = ""
    #: Set once the stages are over and the job writes its end: not to be cancelled again.
    ending: bool = False
    #: This core lost the job's lease (another core ends the job): if cancelled, this one
    #: writes nothing more.
    lost: bool = False
    #: Set when the task began running (or start() gave up and there is none): a task
    #: cancelled before its first step would never run `_run`, so no end, no clean-up.
    begun: asyncio.Event = field(default_factory=asyncio.Event)


def _now() -> timestamp_pb2.Timestamp:
    # Timestamp.GetCurrentTime() goes through datetime (~3 µs); the same microsecond-grain
    # time set directly, as JobEvents stamps its events.
    micros = time.time_ns() // 1000
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


@dataclass(frozen=True, slots=True)
class _Chains:
    """The provider chains one kind of request gets, worked out once per kind."""

    plan: tuple[Provider, ...]
    write: tuple[Provider, ...]
    #: Every provider of either chain, in chain order, each once (the `queued` event's, and
    #: the circuit breakers' check).
    providers: tuple[str, ...]


def _fingerprint(request: generation_service_pb2.GenerateScriptRequest) -> str:
    canonical = generation_service_pb2.GenerateScriptRequest()
    canonical.CopyFrom(request)
    canonical.request_id = ""
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def validate(request: generation_service_pb2.GenerateScriptRequest) -> str:
    """Check a GenerateScript request against the documented limits; the project id."""
    violations: list[FieldViolation] = []
    project_id = ""
    try:
        project_id = limits.project_id("parent", request.parent)
    except ServiceError as error:
        violations.append(FieldViolation("parent", error.message.split(": ", 2)[-1]))
    limits.check_title("title", request.title, violations)
    limits.check_text("description", request.description, limits.DESCRIPTION_MAX, violations)
    limits.check_request_id("request_id", request.request_id, violations)
    limits.raise_if(violations)
    return project_id


class JobRunner:
    """Owns the running jobs of this core."""

    def __init__(
        self,
        *,
        config: CoreConfig,
        store: ProjectStore,
        log: EventLog,
        registry: JobRegistry,
        router: ProviderRouter,
        providers: StageProviders,
        metrics: CoreMetrics,
        coordination: Coordination | None = None,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self._config = config
        #: Story knowledge the plan stage retrieves from and the index stage fills (optional).
        self.knowledge = knowledge
        self._store = store
        self._log = log
        self._registry = registry
        self._router = router
        self._providers = providers
        self._metrics = metrics
        self._jobs: dict[str, _Job] = {}
        #: The running jobs started with a request_id, by (tenant, request_id).
        self._by_request: dict[tuple[str, str], _Job] = {}
        #: Starts under way, by (tenant, request_id): a repeat waits for the first.
        self._starting: dict[tuple[str, str], asyncio.Future[None]] = {}
        #: The provider chains of each kind of routing seen (see `_chains`).
        self._routed: dict[RequestRouting, _Chains] = {}
        self._accepting = True
        self._notice_logged = False
        #: Arrivals of new jobs: pipelines wait for a burst of them to be started.
        self.arrivals = Arrivals()
        self.coordination: Coordination = coordination or MemoryCoordination()
        if isinstance(log, LeaseFenced):
            # Appends of a job whose lease another core took are refused from that moment.
            log.fence(self.coordination.owner)
        #: Jobs stopped without their end, each waiting to end it if no other core does.
        self._ending_later: set[asyncio.Task[None]] = set()
        #: Set by stop_watching: no job is to be ended later from then on.
        self._stopped_watching = False
        self._watch = JobWatch(
            self.coordination,
            lambda: {name: job.generation.detach for name, job in self._jobs.items()},
            self.cancel,
            abandon_after_seconds=config.abandon_after_seconds,
            lease_seconds=config.owner_lease_seconds,
            lost=self._lease_lost,
        )

    def start_watching(self) -> None:
        """Start the rounds over running jobs: leases, cancel requests, abandonment."""
        self._watch.start()

    async def stop_watching(self) -> None:
        """Stop the rounds (after draining), and stop waiting to end jobs left without one."""
        self._stopped_watching = True
        await self._watch.stop()
        tasks = list(self._ending_later)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def accepting(self) -> bool:
        """Whether new jobs are taken (False once shutdown began)."""
        return self._accepting

    @property
    def provider_names(self) -> list[str]:
        """Every provider the stage chains may use."""
        return self._providers.names()

    @property
    def owner_lease_seconds(self) -> float:
        """How long a core's lease on its running jobs lasts without renewal."""
        return self._config.owner_lease_seconds

    @property
    def running(self) -> int:
        """Jobs running in this core now."""
        return len(self._jobs)

    def _chains(self, routing: RequestRouting) -> _Chains:
        # The chains depend only on the request's routing, of which there are a few kinds
        # (providers x flags): each is worked out once. The breakers are checked every time.
        chains = self._routed.get(routing)
        if chains is None:
            chains = self._routed[routing] = self._narrowed(routing)
        if not self._router.usable(chains.providers):
            raise Unavailable(
                "every language-model provider is failing (circuit breakers open); retry later",
                reason="PROVIDERS_UNAVAILABLE",
                retry_after=max(1.0, self._router.seconds_until_change() or 1.0),
            )
        return chains

    def _narrowed(self, routing: RequestRouting) -> _Chains:
        chains: list[tuple[Provider, ...]] = []
        for stage, chain in (("plan", self._providers.plan), ("write", self._providers.write)):
            names = routing.narrow([p.name for p in chain])
            if not names:
                raise invalid(DISABLED_KEY, f"leaves the {stage} stage no provider")
            by_name = {p.name: p for p in chain}
            chains.append(tuple(by_name[name] for name in names))
        plan, write = chains
        providers = tuple(dict.fromkeys(p.name for p in (*plan, *write)))
        return _Chains(plan, write, providers)

    async def start(
        self,
        request: generation_service_pb2.GenerateScriptRequest,
        routing: RequestRouting | None = None,
        deadline: float | None = None,
        *,
        tenant: str | None = None,
        budget: TokenBudget | None = None,
    ) -> str:
        """Accept a job (or find the one with the same request_id); its name.

        `routing` narrows the provider chains; `deadline` (a `time.monotonic()`
        instant, from the caller's gRPC deadline) bounds the model calls.
        `tenant` owns the job (its project must be the tenant's); `budget`
        counts the job's text deltas against the tenant's daily tokens.

        A repeat of a request_id whose start is still under way here (a client whose link
        broke mid-start) waits for that start, then is answered as a repeat of its job.
        """
        key = (tenant or DEFAULT_TENANT, request.request_id)
        mine: asyncio.Future[None] | None = None
        if request.request_id:
            first = self._starting.get(key)
            if first is not None:
                await asyncio.wait({first})  # its job, if it started, is running now
            else:
                mine = self._starting[key] = asyncio.get_running_loop().create_future()
        try:
            return await self._start(request, routing, deadline, tenant=tenant, budget=budget)
        finally:
            if mine is not None:
                del self._starting[key]
                mine.set_result(None)

    async def _start(
        self,
        request: generation_service_pb2.GenerateScriptRequest,
        routing: RequestRouting | None,
        deadline: float | None,
        *,
        tenant: str | None,
        budget: TokenBudget | None,
    ) -> str:
        # Pipelines wait while starts are in progress (server.jobs.arrivals).
        with self.arrivals.starting():
            project_id = validate(request)
            routing = routing or DEFAULT_ROUTING
            owner = tenant or DEFAULT_TENANT
            fingerprint = _fingerprint(request)
            # A repeat of a request whose job runs here (a client resuming before its first
            # event) is that job, whatever the limits on new jobs say now.
            running = self._running_for(request.request_id, owner, fingerprint)
            if running is not None:
                return running
            chains = self._chains(routing)
            if not self._accepting:
                raise Unavailable(
                    "the core is shutting down; retry on another", reason="SHUTTING_DOWN"
                )
            if len(self._jobs) >= self._config.max_running_jobs:
                raise ResourceExhausted(
                    f"this core runs its maximum of {self._config.max_running_jobs} jobs",
                    reason="TOO_MANY_JOBS",
                    retry_after=2.0,
                )
            project = await self._store.get_project(project_id, tenant=tenant)
            if project.status == project_pb2.PROJECT_STATUS_ARCHIVED:
                raise FailedPrecondition(
                    f"project '{request.parent}' is archived;"
                    " set its status to ACTIVE to write more",
                    reason="PROJECT_ARCHIVED",
                )
            now = _now()
            generation = generation_pb2.Generation(
                name=f"generations/g{secrets.token_hex(10)}",
                parent=request.parent,
                title=request.title,
                description=request.description,
                state=generation_pb2.GENERATION_STATE_QUEUED,
                create_time=now,
                update_time=now,
                detach=request.detach,
                request_id=request.request_id,
            )
            # Claimed first, so no other core takes the new job for one whose core is gone.
            await self.coordination.claim(generation.name)
            try:
                stored = await self._registry.create(generation, fingerprint, tenant=owner)
            except BaseException:
                await self.coordination.release(generation.name)
                raise
            if stored.name != generation.name:
                await self.coordination.release(generation.name)
                return stored.name  # the same request again: the same job
            await self._log.create(generation.name)
            events = JobEvents(
                generation.name,
                self._log,
                self._metrics,
                self._config.heartbeat_seconds,
                budget=budget,
            )
            brief = Brief(
                project=project,
                title=request.title,
                description=request.description,
                episode_number=project.episode_count + 1,
            )
            pipeline = Pipeline(
                brief=brief,
                generation=generation.name,
                router=self._router,
                plan_chain=chains.plan,
                write_chain=chains.write,
                store=self._store,
                events=events,
                metrics=self._metrics,
                deadline=deadline,
                knowledge=self.knowledge,
                polish="polish" in routing.flags,
                delta_window_seconds=self._config.delta_window_seconds,
            )
            job = _Job(generation, events, pipeline, tenant=owner, fingerprint=fingerprint)
            notice = SYNTHETIC_NOTICE if chains.providers == ("synthetic",) else ""
            # Registered before `queued` is in the log: a reader who sees it may cancel at once,
            # and must find the job here (a cancel before the task exists waits for it).
            self._register(job)
            self._metrics.jobs_active.inc()
            try:
                await events.emit(
                    "queued",
                    GenerationEvent.Queued(
                        parent=request.parent, providers=chains.providers, notice=notice
                    ),
                )
            except BaseException:
                self._forget(job)
                self._metrics.jobs_active.dec()
                try:
                    with contextlib.suppress(ServiceError):
                        await self.coordination.release(generation.name)
                finally:
                    # No task will come: a cancel waiting for one ends the job as an orphan.
                    job.begun.set()
                raise
            if notice and not self._notice_logged:
                # In every job's `queued` event; logged once per process, not per job.
                self._notice_logged = True
                log.info("%s: %s", generation.name, notice)
            job.task = asyncio.create_task(self._run(job), name=f"job {generation.name}")
            return generation.name

    def _register(self, job: _Job) -> None:
        self._jobs[job.generation.name] = job
        if job.generation.request_id:
            self._by_request[(job.tenant, job.generation.request_id)] = job

    def _forget(self, job: _Job) -> None:
        self._jobs.pop(job.generation.name, None)
        key = (job.tenant, job.generation.request_id)
        if self._by_request.get(key) is job:
            del self._by_request[key]

    def _running_for(self, request_id: str, tenant: str, fingerprint: str) -> str | None:
        """The job of this core that `request_id` started for `tenant`, if it still runs.

        Only the jobs running here are asked, not the registry, so a core refusing new
        jobs (full, or shutting down) answers a flood of them without a registry call.
        A repeat whose job ended or runs on another core meets the limits; once admitted,
        the registry answers it with that job. A different request with the key is
        ALREADY_EXISTS, as the registry would answer it.
        """
        job = self._by_request.get((tenant, request_id)) if request_id else None
        if job is None:
            return None
        if job.fingerprint != fingerprint:
            raise AlreadyExists(
                f"request_id {request_id!r} was used for a different request",
                reason="REQUEST_ID_REUSED",
            )
        return job.generation.name

    async def _set_state(self, job: _Job, state: generation_pb2.GenerationState.ValueType) -> None:
        job.generation.state = state
        job.generation.update_time.CopyFrom(_now())
        await self._registry.update(job.generation)

    async def _run(self, job: _Job) -> None:
        outcome = "failed"
        #: False once the log is known to hold an end, or to be gone: else, without the
        #: job's own end, the job is ended later (`_end_later`).
        unended = True
        job.begun.set()
        try:
            try:
                job.events.start_heartbeat()
                completed = await self._work(job)
                job.generation.episode = completed.episode.name
                await self._end(
                    job, generation_pb2.GENERATION_STATE_SUCCEEDED, "completed", completed
                )
                outcome = "succeeded"
            except asyncio.CancelledError:
                outcome = "cancelled"
                if not job.lost:  # lost: the core holding its lease now writes its end
                    await self._end(
                        job,
                        generation_pb2.GENERATION_STATE_CANCELLED,
                        "cancelled",
                        GenerationEvent.Cancelled(reason=job.cancel_reason or "cancelled"),
                    )
            except (DataLoss, EventLogConflict):
                raise  # the log cannot take a terminal event: see below
            except ServiceError as error:
                await self._fail(job, error)
            except Exception:
                log.exception("%s: failed unexpectedly", job.generation.name)
                await self._fail(job, Internal("the job failed unexpectedly", reason="INTERNAL"))
        except DataLoss as error:
            # Redis lost the log (a restart without persistence): readers get DATA_LOSS.
            unended = False
            log.error("%s: %s", job.generation.name, error.message)
        except LeaseTaken as error:
            # Another core took the lease (it thought this core gone) and ends the job.
            job.lost = True
            log.warning("%s: stopped, its appends refused: %s", job.generation.name, error)
        except EventLogBehind as error:
            unended = not await self._end_behind(job, error)
        except EventLogConflict as error:
            # Another core ended this job (it thought this core was gone); its end stands.
            unended = False
            log.warning("%s: ended elsewhere: %s", job.generation.name, error)
        except ServiceError as error:
            # The log is unreachable (Redis down past the retries): the job stops here; its
            # lease lapses, and the first core to meet the job, or this one, ends it.
            log.error("%s: cannot write its end: %s", job.generation.name, error.message)
        finally:
            await job.events.stop_heartbeat()
            self._log.writer_done(job.generation.name)
            try:
                await job.events.settle_budget()
            except Exception:  # a refusal Redis explains included: the job's end goes on
                log.exception("%s: settling its token budget failed", job.generation.name)
            self._forget(job)
            try:
                await self.coordination.release(job.generation.name)
            except Exception:  # its lease lapses on its own
                log.exception("%s: releasing its lease failed", job.generation.name)
            if unended and not job.events.ended:
                self._end_later(job.generation.name)
            self._metrics.jobs_active.dec()
            self._metrics.jobs.labels(outcome).inc()
            self._metrics.generation_duration.labels(outcome).observe(
                time.monotonic() - job.started
            )
            # A job's second and last line (its first: `started`, when the pipeline began).
            failure = f" ({job.failure})" if job.failure else ""  # set only by _fail
            log.info("%s: %s%s", job.generation.name, outcome, failure)

    async def _end(
        self,
        job: _Job,
        state: generation_pb2.GenerationState.ValueType,
        kind: str,
        payload: Message,
    ) -> None:
        """Write the job's end: its state in the registry, then its terminal event.

        The registry first, so a reader who sees the event finds the job ended. When the
        log refuses the event because another core ended the job first (it thought this
        core gone), the registry is written again from that core's end: both say the same.
        """
        await self._set_state(job, state)
        try:
            await job.events.emit(kind, payload)
        except (LeaseTaken, EventLogBehind):
            raise  # the other core's end, or this core's (see _run), writes the registry
        except EventLogConflict:
            with contextlib.suppress(ServiceError):
                await self._registry_from_log(job.generation.name)
            raise

    async def _registry_from_log(self, name: str) -> None:
        """Write the log's terminal event into the job's registry record, if the log ended
        and the record says otherwise."""
        end = await self._log.end(name)
        kind = None if end is None else end.WhichOneof("kind")
        if end is None or kind not in TERMINAL_KINDS:
            return
        record = await self._registry.get(name)
        if record.state == _STATE_OF_END[kind]:
            return
        record.state = _STATE_OF_END[kind]
        record.update_time.CopyFrom(end.time)
        if kind == "failed":
            record.error.CopyFrom(end.failed.status)
        else:
            record.ClearField("error")
        await self._registry.update(record)
        log.warning("%s: its end was written by another core: %s", name, kind)

    async def _end_behind(self, job: _Job, error: EventLogBehind) -> bool:
        """End a job whose log lost events this core had appended; whether it did.

        A Redis failover to a replica that missed the last writes leaves the log behind
        the job, which cannot go on from there. Its followers end with DATA_LOSS; the job
        ends with `failed` (DATA_LOSS, EVENT_LOG_LOST) after what the log holds, written
        here while this core holds the lease (the log refuses it otherwise).
        """
        name = job.generation.name
        lost = DataLoss(
            f"the event log of {name} lost events in a Redis failover (it ends at event"
            f" {error.last}, the job had written more); start the job again",
            reason="EVENT_LOG_LOST",
        )
        job.failure = lost.reason
        log.error("%s: %s", name, error)
        try:
            return await self._write_end(name, "failed", lost.to_status())
        except ServiceError as failed:
            log.error("%s: cannot write its end: %s", name, failed.message)
            return False

    def _end_later(self, name: str) -> None:
        if self._stopped_watching:
            return  # the core is stopping: the next core to meet the job ends it
        task = asyncio.create_task(self._end_if_nobody_does(name), name=f"end {name} later")
        self._ending_later.add(task)
        task.add_done_callback(self._ending_later.discard)

    async def _end_if_nobody_does(self, name: str) -> None:
        """End a job of this core that stopped without its end, unless another core does.

        The core that took its lease ends it, but may give up, fail or die after taking
        the lease; and a job whose end Redis refused has nobody else to meet it when
        nobody reads it. Every lease period this core looks: a log that ended has its end
        in the registry too (the core that wrote it may have died before), one that is gone
        is left alone; otherwise `end_orphan`, which takes the lease first (SET NX), so
        does nothing while another core holds it.
        """
        for _ in range(END_LATER_ATTEMPTS):
            # A lease and a margin: a renewal sent just before the job's release may have
            # taken the lease back for one more lease period.
            await asyncio.sleep(self._config.owner_lease_seconds * 1.5)
            try:
                if await self._log.ended(name):
                    await self._registry_from_log(name)
                    return
                if await self.end_orphan(name):
                    return
            except NotFound:
                return  # the log expired or vanished: nothing to end
            except ServiceError as error:
                log.warning("%s: ending it failed: %s", name, error.message)
            except Exception:  # e.g. a refusal Redis explains; try again next period
                log.exception("%s: ending it failed", name)
        log.error(
            "%s: stopped without its end, and nobody ended it in %d tries",
            name,
            END_LATER_ATTEMPTS,
        )

    async def _work(self, job: _Job) -> GenerationEvent.Completed:
        """The job's stages; whatever way they end, the job then only writes its end."""
        try:
            await self.arrivals.settled()  # the jobs of a burst start first
            # Logged here, not in start(): a burst's first events go out before its log lines.
            # The job's one line until its end (state RUNNING; state changes are not logged).
            log.info("%s: started for %s", job.generation.name, job.generation.parent)
            await self._set_state(job, generation_pb2.GENERATION_STATE_RUNNING)
            return await job.pipeline.run()
        finally:
            job.ending = True

    async def _fail(self, job: _Job, error: ServiceError) -> None:
        job.failure = error.reason
        job.generation.error.CopyFrom(error.to_status())
        await self._end(
            job,
            generation_pb2.GENERATION_STATE_FAILED,
            "failed",
            GenerationEvent.Failed(status=error.to_status()),
        )

    async def cancel(
        self, name: str, reason: str = "cancelled by request"
    ) -> generation_pb2.Generation:
        """Cancel a job wherever it runs; the job after that took effect.

        A job of this core is cancelled at once; one already saving its episode
        is not cut short, and gets up to CANCEL_WAIT_SECONDS to complete (past
        them it comes back RUNNING, and completes later). A job of another core
        gets a cancel request and up to CANCEL_WAIT_SECONDS to reach its
        terminal event; a job whose core is gone is ended here. An ended job is
        returned unchanged.
        """
        job = self._jobs.get(name)
        if job is not None and await self._cancel(job, reason, committed_wait=CANCEL_WAIT_SECONDS):
            return await self._registry.get(name)
        record = await self._registry.get(name)
        if record.state in _ENDED_STATES or await self._log.ended(name):
            return record
        if await self.coordination.owner_alive(name):
            await self.coordination.request_cancel(name, reason)
            await self._await_end(name)
        await self.end_orphan(name, cancel_reason=reason)
        return await self._registry.get(name)

    async def _await_end(self, name: str) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT_SECONDS):
                last = await self._log.last_sequence(name)
                async for _ in self._log.follow(name, max(0, last - 1)):
                    pass

    def _lease_lost(self, name: str, how: LeaseLoss) -> bool:
        """This core lost the lease of a job of this core; whether to stop the job.

        Another core believed this one gone and ends the job, so the job stops here
        without writing its end (`lost`). One already saving its episode or writing its
        end cannot take that back: it goes on, and its appends are refused.
        """
        job = self._jobs.get(name)
        if job is None or job.lost:
            return False
        job.lost = True
        why = _LOSS[how]
        if job.ending:
            log.warning("%s: %s while it wrote its end", name, why)
            return False
        if job.pipeline.state.committed:
            log.error("%s: %s while it saved its episode (the episode stays saved)", name, why)
            return False
        log.warning("%s: %s; stopping it here", name, why)
        return True

    async def end_orphan(self, name: str, cancel_reason: str = "") -> bool:
        """End a job whose core is gone (no live lease, no terminal event); whether it did.

        The job ends with `cancelled` when a cancel was asked for, else with
        `failed` (UNAVAILABLE, JOB_OWNER_LOST). This core takes the job's lease
        first, so of racing cores, and an owner coming back, only one writes.
        """
        if name in self._jobs or not await self.coordination.take_over(name):
            return False
        try:
            return await self._end_taken_over(name, cancel_reason)
        finally:
            with contextlib.suppress(ServiceError):
                await self.coordination.release(name)

    async def _end_taken_over(self, name: str, cancel_reason: str) -> bool:
        if cancel_reason:
            ended = await self._write_end(name, "cancelled", cancel_reason=cancel_reason)
        else:
            status = Unavailable(
                f"the core running {name} stopped without ending it; start the job again",
                reason="JOB_OWNER_LOST",
            ).to_status()
            ended = await self._write_end(name, "failed", status)
        if ended:
            kind = "cancelled" if cancel_reason else "failed"
            log.warning("%s: its core is gone; ended here with %s", name, kind)
        return ended

    async def _write_end(
        self,
        name: str,
        kind: str,
        status: status_pb2.Status | None = None,
        *,
        cancel_reason: str = "",
    ) -> bool:
        """Append a job's end after whatever its log holds, and put it in the registry.

        For a job whose lease this core holds, and only for part of that lease: an append
        that met another (the job's old core, appending until it learnt of the lost
        lease) is tried again after a backoff. False when the log ended meanwhile, the
        lease went to another core, or the lease ran short.
        """
        give_up = time.monotonic() + self._config.owner_lease_seconds * 2 / 3
        pause = END_RETRY_SECONDS
        while not await self._log.ended(name):
            stamp = _now()
            event = GenerationEvent(
                generation=name, sequence=await self._log.last_sequence(name) + 1, time=stamp
            )
            if status is None:
                event.cancelled.reason = cancel_reason
            else:
                event.failed.status.CopyFrom(status)
            try:
                await self._log.append(event)
            except LeaseTaken:
                return False  # this core's lease lapsed and another core took it
            except EventLogConflict as error:
                if time.monotonic() + pause >= give_up:
                    log.warning("%s: its end did not fit the log in time: %s", name, error)
                    return False
                await asyncio.sleep(pause)  # something was appended meanwhile: look again
                pause = min(pause * 2, END_RETRY_CAP_SECONDS)
                continue
            record = await self._registry.get(name)
            record.state = _STATE_OF_END[kind]
            record.update_time.CopyFrom(stamp)
            if status is not None:
                record.error.CopyFrom(status)
            await self._registry.update(record)
            self._metrics.events.labels(kind).inc()
            return True
        return False

    async def _cancel(self, job: _Job, reason: str, *, committed_wait: float | None = None) -> bool:
        """Cancel a job of this core and wait for its end; False if it never got a task.

        A job that began saving (or is writing its end) is let finish: waited for up to
        `committed_wait` seconds (None: as long as it takes; the caller bounds it).
        asyncio.wait, not shield: neither the caller's cancellation nor the job's is
        swallowed here.
        """
        await job.begun.wait()  # a job still being started gets its task within moments
        task = job.task
        if task is None:
            return False
        attempts = 0
        while not task.done():
            if job.pipeline.state.committed or job.ending:
                # Saving began (the episode is, or is being, stored), or the job is writing
                # its end: let it finish rather than cut that short.
                await asyncio.wait((task,), timeout=committed_wait)
                break
            if attempts == CANCEL_ATTEMPTS:
                log.error(
                    "%s: still running after %d cancellations; not waiting for it",
                    job.generation.name,
                    attempts,
                )
                break
            if attempts:
                log.warning(
                    "%s: still running %.1fs after its cancellation; cancelling it again",
                    job.generation.name,
                    RECANCEL_AFTER_SECONDS,
                )
            else:
                job.cancel_reason = reason
            task.cancel()
            attempts += 1
            await asyncio.wait((task,), timeout=RECANCEL_AFTER_SECONDS)
        return True

    def stop_accepting(self) -> None:
        """Refuse new jobs from now on."""
        self._accepting = False

    async def drain(self, grace_seconds: float) -> None:
        """Let running jobs finish for `grace_seconds`, then cancel the rest."""
        self._accepting = False
        jobs = list(self._jobs.values())
        if jobs:
            log.info("draining %d jobs for up to %.1fs", len(jobs), grace_seconds)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    for job in jobs:
                        await job.begun.wait()  # one still being started: its task comes soon
                    tasks = [job.task for job in jobs if job.task is not None]
                    if tasks:
                        await asyncio.wait(tasks)
        remaining = list(self._jobs.values())
        if not remaining:
            return
        log.info("cancelling %d jobs still running at shutdown", len(remaining))
        # One that has saved its episode completes, not cancelled: its indexing gets a while.
        skip = asyncio.get_running_loop().call_later(
            SHUTDOWN_INDEX_SECONDS, _skip_indexing, remaining
        )
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_CANCEL_SECONDS):
                    await asyncio.gather(
                        *(self._cancel(job, "the server is shutting down") for job in remaining)
                    )
        finally:
            skip.cancel()
        # Past the bound, or given up on after CANCEL_ATTEMPTS cancellations.
        stuck = [
            job
            for job in remaining
            if job.generation.name in self._jobs and (job.task is None or not job.task.done())
        ]
        if stuck:
            log.error(
                "shutdown: %d jobs did not end after their cancellation (waited up to %gs);"
                " stopping without them: %s",
                len(stuck),
                SHUTDOWN_CANCEL_SECONDS,
                ", ".join(f"{job.generation.name} ({_stage(job)})" for job in stuck),
            )


def _skip_indexing(jobs: list[_Job]) -> None:
    for job in jobs:
        job.pipeline.skip_indexing()


def _stage(job: _Job) -> str:
    """Where a job stands, for a shutdown that cannot wait for it."""
    if job.task is None:
        return "not started"
    if job.ending:
        return "writing its end"
    stage = job.pipeline.state.stage
    if stage == generation_pb2.STAGE_SAVE:
        return "saving its episode"
    if stage == generation_pb2.STAGE_INDEX:
        return "indexing its episode"
    return "running"
