"""Builds the aiohttp application: routes, middleware, and the resources it owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
from aiohttp import web
from scriptgen._grpc_wakeups import drained_grpc_wakeups
from scriptgen._loop_lag import LoopLagMonitor
from scriptgen.v1 import (
    generation_service_pb2_grpc,
    project_service_pb2_grpc,
    relay_service_pb2_grpc,
)

from gateway import state
from gateway.admission import SLOTS, StreamSlots
from gateway.config import GatewayConfig
from gateway.core_relay import CoreRelay
from gateway.metrics import GatewayMetrics
from gateway.middleware import echo_request_id, identify, observe, translate_errors
from gateway.open_core import guarded, refuse_open_core
from gateway.rate_limits import add_rate_limit_headers
from gateway.rate_limits import interceptors as rate_limit_interceptors
from gateway.readiness import Readiness
from gateway.routes_generations import routes as generation_routes
from gateway.routes_knowledge import routes as knowledge_routes
from gateway.routes_operations import routes as operation_routes
from gateway.routes_page import routes as page_routes
from gateway.routes_projects import routes as project_routes
from gateway.security import add_security_headers, cors
from gateway.worker_metrics import WorkerMetrics


def create_app(config: GatewayConfig) -> web.Application:
    """A gateway app for `config`; its channel to the core opens when the app starts."""
    app = web.Application(
        middlewares=[observe, cors, identify, translate_errors, refuse_open_core],
        client_max_size=config.max_body_bytes,
    )
    app[state.CONFIG] = config
    app[state.METRICS] = GatewayMetrics.create()
    app[state.RELAYS] = set()
    app[state.STOPPING] = state.Stopping()
    app[SLOTS] = StreamSlots(config.max_streams)
    app.add_routes(project_routes)
    app.add_routes(knowledge_routes)
    app.add_routes(generation_routes)
    app.add_routes(operation_routes)
    app.add_routes(page_routes)
    app.cleanup_ctx.append(_core_channel)
    app.cleanup_ctx.append(_readiness_watch)
    app.cleanup_ctx.append(_loop_lag)
    if config.worker_metrics_dir and config.worker_name:
        app.cleanup_ctx.append(_worker_metrics)
    # Beyond loopback, no API call reaches a core that takes calls without a key.
    app.cleanup_ctx.append(guarded)
    app.on_response_prepare.append(echo_request_id)
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.on_shutdown.append(_drain_streams)
    return app


def _channel_options(config: GatewayConfig) -> list[tuple[str, int | str]]:
    # gRPC's own reconnect backoff grows to minutes by default; bounding it keeps
    # readiness (and every call) quick to recover when a core comes back. One
    # HTTP/2 connection would pin the gateway to one core; round_robin keeps a
    # connection to every address the target resolves to and spreads calls.
    return [
        ("grpc.lb_policy_name", config.core_load_balancing),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", max(1, int(config.readiness_backoff_seconds * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(config.readiness_backoff_max_seconds * 1000))),
    ]


async def _core_channel(app: web.Application) -> AsyncIterator[None]:
    config = app[state.CONFIG]
    # Before the channel: grpc.aio starts here, and its wake-ups are found as it does.
    with drained_grpc_wakeups():
        channel = grpc.aio.insecure_channel(
            config.core_target,
            options=_channel_options(config),
            interceptors=rate_limit_interceptors(),
        )
        calls = config.relay_calls()
        relay = (
            CoreRelay(
                relay_service_pb2_grpc.RelayServiceStub(channel),
                calls=calls,
                max_age_seconds=config.core_relay_max_age_seconds,
            )
            if calls
            else None
        )
        app[state.CORE] = state.CoreStubs(
            channel=channel,
            projects=project_service_pb2_grpc.ProjectServiceStub(channel),
            generations=generation_service_pb2_grpc.GenerationServiceStub(channel),
            relay=relay,
        )
        yield
        if relay is not None:
            await relay.close()
        await channel.close()


async def _readiness_watch(app: web.Application) -> AsyncIterator[None]:
    config = app[state.CONFIG]
    readiness = Readiness(
        app[state.CORE].channel,
        app[state.METRICS],
        backoff_seconds=config.readiness_backoff_seconds,
        backoff_max_seconds=config.readiness_backoff_max_seconds,
    )
    app[state.READINESS] = readiness
    readiness.start()
    yield
    await readiness.stop()


async def _loop_lag(app: web.Application) -> AsyncIterator[None]:
    monitor = LoopLagMonitor(app[state.METRICS].event_loop_lag)
    monitor.start()
    yield
    monitor.stop()


async def _worker_metrics(app: web.Application) -> AsyncIterator[None]:
    config = app[state.CONFIG]
    shared = WorkerMetrics(
        app[state.METRICS].registry, Path(config.worker_metrics_dir), config.worker_name
    )
    app[state.WORKER_METRICS] = shared
    shared.start()
    yield
    shared.stop()


async def _drain_streams(app: web.Application) -> None:
    # End open event streams cleanly so EventSource clients reconnect (with
    # Last-Event-ID) to another gateway instead of waiting out the drain. A stream
    # whose request is still being read now is ended as it opens (gateway.sse).
    app[state.STOPPING].drain()
    relays = app[state.RELAYS]
    for relay in list(relays):
        relay.drain()
