"""GenerationService: start jobs, follow and resume their event streams, get, list, cancel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from scriptgen.v1 import generation_pb2, generation_service_pb2, generation_service_pb2_grpc

from server import limits, pagination
from server.admission import StreamAdmission
from server.auth.guard import CALLER, Guard, current_tenant
from server.errors import NotFound, OutOfRange, invalid
from server.events import EventLog
from server.jobs import JobRegistry, JobRunner
from server.jobs.readers import ReaderPresence
from server.metrics import CoreMetrics
from server.providers.selection import parse_metadata
from server.services.calls import streaming, unary
from server.services.encoding import encoded_response

Context = aio.ServicerContext[Any, Any]
#: Seconds a job's model calls may run past the caller's deadline.
DEADLINE_SLACK = 0.5
_ENDED_STATES = frozenset(
    {
        generation_pb2.GENERATION_STATE_SUCCEEDED,
        generation_pb2.GENERATION_STATE_FAILED,
        generation_pb2.GENERATION_STATE_CANCELLED,
    }
)


class GenerationServicer(generation_service_pb2_grpc.GenerationServiceServicer):
    """Implements scriptgen.v1.GenerationService on the job runner and the event log."""

    def __init__(
        self,
        runner: JobRunner,
        log: EventLog,
        registry: JobRegistry,
        metrics: CoreMetrics,
        guard: Guard | None = None,
        admission: StreamAdmission | None = None,
    ) -> None:
        self.runner = runner
        self.log = log
        self.registry = registry
        self.metrics = metrics
        #: Checks every call's key and limits; None: no auth (one tenant, `default`).
        self.guard = guard
        #: Refuses a new event stream at once when this process serves its maximum.
        self.admission = admission or StreamAdmission()
        #: Every open stream's reader lease, renewed by one sweep.
        self.presence = ReaderPresence(runner)

    async def _events(self, name: str, after_sequence: int) -> AsyncIterator[bytes]:
        """The job's events after `after_sequence` as encoded stream responses."""
        token = await self.presence.enter(name)
        try:
            async for event in self.log.follow_encoded(name, after_sequence):
                yield encoded_response(event)
        finally:
            await self.presence.leave(name, token)

    async def _with_last_sequence(
        self, job: generation_pb2.Generation
    ) -> generation_pb2.Generation:
        try:
            job.last_sequence = await self.log.last_sequence(job.name)
        except NotFound:
            job.last_sequence = 0  # the log outlived its retention; the record remains
        return job

    # Responses are pre-encoded bytes (services.encoding), not the stub's message type.
    @streaming("GenerateScript")
    async def GenerateScript(  # type: ignore[override]
        self, request: generation_service_pb2.GenerateScriptRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Start a job and stream its events (each an encoded GenerateScriptResponse)."""
        # The slot is taken before the first await: a burst cannot slip past the limit.
        with self.admission.slot():
            routing = parse_metadata(
                context.invocation_metadata() or (), self.runner.provider_names
            )
            # A detached job outlives the call, so only an attached one inherits its deadline. The
            # slack lets the call itself end first with DEADLINE_EXCEEDED, as the caller expects;
            # the job then stops its model calls and ends with a `failed` event for other readers.
            remaining = None if request.detach else context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining + DEADLINE_SLACK
            caller = CALLER.get()
            budget = None if self.guard is None else await self.guard.budget(caller)
            name = await self.runner.start(
                request, routing, deadline, tenant=current_tenant(), budget=budget
            )
            async for response in self._events(name, 0):
                yield response

    @streaming("StreamGenerationEvents")
    async def StreamGenerationEvents(  # type: ignore[override]
        self, request: generation_service_pb2.StreamGenerationEventsRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Replay and follow a job's events (each an encoded StreamGenerationEventsResponse)."""
        limits.generation_id("name", request.name)
        with self.admission.slot():
            if request.after_sequence < 0:
                raise invalid("after_sequence", "must not be negative")
            await self.registry.get(request.name, tenant=current_tenant())
            last = await self.log.last_sequence(request.name)
            if request.after_sequence > last:
                raise OutOfRange(
                    f"after_sequence {request.after_sequence} is beyond the job's"
                    f" last event {last}",
                    reason="SEQUENCE_AHEAD",
                    metadata={"last_sequence": str(last)},
                )
            async for response in self._events(request.name, request.after_sequence):
                yield response

    @unary("GetGeneration")
    async def GetGeneration(
        self, request: generation_service_pb2.GetGenerationRequest, context: Context
    ) -> generation_service_pb2.GetGenerationResponse:
        limits.generation_id("name", request.name)
        job = await self.registry.get(request.name, tenant=current_tenant())
        if job.state not in _ENDED_STATES and await self.runner.end_orphan(request.name):
            job = await self.registry.get(request.name)
        return generation_service_pb2.GetGenerationResponse(
            generation=await self._with_last_sequence(job)
        )

    @unary("ListGenerations")
    async def ListGenerations(
        self, request: generation_service_pb2.ListGenerationsRequest, context: Context
    ) -> generation_service_pb2.ListGenerationsResponse:
        if request.parent:
            limits.project_id("parent", request.parent)
        size = limits.page_size("page_size", request.page_size)
        kind = f"generations:{request.parent}"
        after = pagination.decode("page_token", kind, request.page_token)
        jobs, position = await self.registry.list(
            request.parent, size, after, tenant=current_tenant()
        )
        token = pagination.encode(kind, position) if position is not None else ""
        return generation_service_pb2.ListGenerationsResponse(
            generations=[await self._with_last_sequence(job) for job in jobs],
            next_page_token=token,
        )

    @unary("CancelGeneration")
    async def CancelGeneration(
        self, request: generation_service_pb2.CancelGenerationRequest, context: Context
    ) -> generation_service_pb2.CancelGenerationResponse:
        limits.generation_id("name", request.name)
        await self.registry.get(request.name, tenant=current_tenant())
        job = await self.runner.cancel(request.name)
        return generation_service_pb2.CancelGenerationResponse(
            generation=await self._with_last_sequence(job)
        )
