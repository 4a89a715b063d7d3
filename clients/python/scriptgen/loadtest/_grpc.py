"""One generation straight from the core: GenerationService.GenerateScript."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from scriptgen.loadtest._records import Outcome, StreamRecord
from scriptgen.loadtest._tokens import count_tokens
from scriptgen.v1 import generation_pb2, generation_service_pb2

if TYPE_CHECKING:
    from scriptgen.v1.generation_service_pb2_grpc import GenerationServiceAsyncStub


async def run_grpc_stream(
    stub: GenerationServiceAsyncStub,
    record: StreamRecord,
    title: str,
    on_first_event: Callable[[], None],
) -> None:
    """Start one job and read its events to the end into `record`."""
    request = generation_service_pb2.GenerateScriptRequest(parent=record.project, title=title)
    record.began = record.sent = time.monotonic()
    call = stub.GenerateScript(request)
    try:
        async for response in call:
            now = time.monotonic()
            event = response.event
            kind = event.WhichOneof("kind")
            if kind == "heartbeat":
                record.heartbeats += 1
                continue
            record.events += 1
            if record.first_event is None:
                record.first_event = now
                on_first_event()
            if kind == "text_delta":
                tokens = count_tokens(event.text_delta.text)
                if record.first_token is None:
                    record.first_token = now
                record.tokens += tokens
                record.delta_times.append(now)
                record.delta_tokens.append(tokens)
            elif kind == "stage_started" and record.write_started is None:
                if event.stage_started.stage == generation_pb2.STAGE_WRITE:
                    record.write_started = now
            elif kind == "completed":
                record.outcome = Outcome.COMPLETED
                record.episode = event.completed.episode.name
                record.episode_tokens = count_tokens(event.completed.episode.script)
                return
            elif kind == "failed":
                record.outcome = Outcome.FAILED
                code = event.failed.status.code
                names = {c.value[0]: c.name for c in grpc.StatusCode}
                record.error = f"failed event {names.get(code, str(code))}"
                return
            elif kind == "cancelled":
                record.outcome = Outcome.CANCELLED
                record.error = "cancelled event"
                return
        record.error = "ended without a terminal event"
    except grpc.aio.AioRpcError as error:
        record.error = f"grpc {error.code().name}"
    finally:
        call.cancel()
        record.ended = time.monotonic()
