"""HTTP routes of GenerationService: start, follow, resume, list, get and cancel jobs."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import quote

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import empty_pb2
from scriptgen.v1 import generation_service_pb2

from gateway import rate_limits, state
from gateway.admission import SLOTS
from gateway.codec import json_response, parse_message, to_json
from gateway.errors import ApiError, Reason
from gateway.inputs import Query, after_sequence, json_object, path_id
from gateway.routes_projects import idempotency_key
from gateway.security import ACCESS_TOKEN_PARAMETER
from gateway.sse import Upstream, relay_events

routes = web.RouteTableDef()

_GENERATIONS = "generations/"
#: Initial metadata of GenerateScript with the job token (server.services.calls).
JOB_TOKEN_KEY = "x-job-token"


def _generation_name(request: web.Request) -> str:
    return f"{_GENERATIONS}{path_id(request, 'generation')}"


def _wants_event_stream(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == "text/event-stream" for part in accept.split(","))


def _generation_url(name: str) -> str:
    return f"/v1/{name}"


def _stream_slot(request: web.Request) -> AbstractContextManager[None]:
    """One of this process's SSE stream slots; 429 with Retry-After when none is free."""
    slots = request.app.get(SLOTS)
    return nullcontext() if slots is None else slots.slot()


async def _job_token(request: web.Request, call: grpc.aio.UnaryStreamCall[Any, Any]) -> str:
    """The job token the core sent with the job's first event (none with auth off); the
    rate-limit window sent with it is kept for the answer."""
    try:
        metadata = await call.initial_metadata()
    except grpc.aio.AioRpcError:
        return ""
    rate_limits.take(request, metadata)
    return _token_in(metadata)


def _token_in(metadata: grpc.aio.Metadata | None) -> str:
    for key, value in metadata or ():
        if key == JOB_TOKEN_KEY and isinstance(value, str):
            return value
    return ""


def _events_url(url: str, token: str) -> str:
    """Where to follow the job; with auth on, a short-lived token a plain EventSource can use."""
    events = f"{url}/events"
    return f"{events}?{ACCESS_TOKEN_PARAMETER}={quote(token, safe='')}" if token else events


@routes.post("/v1/projects/{project}/generations")
async def generate_script(request: web.Request) -> web.StreamResponse:
    """Start a job; answer 201 with where to follow it, or its events as SSE."""
    parent = f"projects/{path_id(request, 'project')}"
    Query(request).finish()
    body = await json_object(request, request.app[state.CONFIG].max_body_bytes)
    if "parent" in body:
        raise ApiError.invalid(
            Reason.INVALID_FIELD,
            "The project is named by the path.",
            {"parent": "Must not be in the body; the path names the project."},
        )
    job = parse_message(body, generation_service_pb2.GenerateScriptRequest())
    job.parent = parent
    job.request_id = idempotency_key(request, job.request_id)
    core = request.app[state.CORE]
    if _wants_event_stream(request):
        # Refused before the core hears of it: an overloaded gateway starts no job.
        with _stream_slot(request):
            metadata = state.call_metadata(request)
            upstream: Upstream = (
                core.generations.GenerateScript(job, metadata=metadata)
                if core.relay is None
                else core.relay.generate_script(job, metadata)
            )
            return await relay_events(request, upstream, generation="", route="generate")
    call = core.generations.GenerateScript(job, metadata=state.call_metadata(request))
    try:
        # The first event (`queued`) names the job; the job outlives this call.
        async with asyncio.timeout(state.unary_deadline(request)):
            first = await call.read()
    except TimeoutError:
        call.cancel()
        raise ApiError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "The core did not accept the job in time."
        ) from None
    finally:
        call.cancel()
    if not isinstance(first, generation_service_pb2.GenerateScriptResponse) or not (
        first.event.generation
    ):
        raise ApiError.gateway(
            grpc.StatusCode.INTERNAL,
            Reason.GATEWAY_INTERNAL,
            "The core ended the job's stream before naming the job.",
        )
    name = first.event.generation
    token = await _job_token(request, call)
    reply = await core.generations.GetGeneration(
        generation_service_pb2.GetGenerationRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    url = _generation_url(name)
    return json_response(
        {"generation": to_json(reply.generation), "eventsUrl": _events_url(url, token)},
        status=201,
        headers={"Location": url},
    )


@routes.get("/v1/projects/{project}/generations")
async def list_generations(request: web.Request) -> web.StreamResponse:
    parent = f"projects/{path_id(request, 'project')}"
    query = Query(request)
    page_size = query.integer("pageSize") or 0
    page_token = query.text("pageToken") or ""
    query.finish()
    reply = await request.app[state.CORE].generations.ListGenerations(
        generation_service_pb2.ListGenerationsRequest(
            parent=parent, page_size=page_size, page_token=page_token
        ),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)


@routes.get("/v1/generations/{generation}")
async def get_generation(request: web.Request) -> web.StreamResponse:
    """The job; asked with an API key, a `Link: <eventsUrl>; rel="events"` with a fresh
    job token too, for a page whose token expired while it was disconnected."""
    name = _generation_name(request)
    Query(request).finish()
    call = request.app[state.CORE].generations.GetGeneration(
        generation_service_pb2.GetGenerationRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    reply = await call
    token = _token_in(await call.trailing_metadata())
    url = _events_url(_generation_url(name), token)
    # The link carries a credential: never kept by a cache.
    headers = {"Link": f'<{url}>; rel="events"', "Cache-Control": "no-store"} if token else None
    return json_response(reply.generation, headers=headers)


@routes.post("/v1/generations/{generation}:cancel")
async def cancel_generation(request: web.Request) -> web.StreamResponse:
    name = _generation_name(request)
    Query(request).finish()
    body = await json_object(request, request.app[state.CONFIG].max_body_bytes)
    # The body is an empty CancelGenerationRequest: the path already names the job.
    parse_message(body, empty_pb2.Empty())
    reply = await request.app[state.CORE].generations.CancelGeneration(
        generation_service_pb2.CancelGenerationRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply.generation)


@routes.get("/v1/generations/{generation}/events")
async def stream_generation_events(request: web.Request) -> web.StreamResponse:
    """Follow a job as SSE, resuming after `Last-Event-ID`."""
    name = _generation_name(request)
    query = Query(request)
    after = after_sequence(request, query)
    query.text(ACCESS_TOKEN_PARAMETER)  # a job token: forwarded by the identify middleware
    query.finish()
    core = request.app[state.CORE]
    follow = generation_service_pb2.StreamGenerationEventsRequest(name=name, after_sequence=after)
    with _stream_slot(request):
        metadata = state.call_metadata(request)
        upstream: Upstream = (
            core.generations.StreamGenerationEvents(follow, metadata=metadata)
            if core.relay is None
            else core.relay.stream_generation_events(follow, metadata)
        )
        return await relay_events(request, upstream, generation=name, route="events")
