"""Typed keys of what the app and each request hold: config, core stubs, metrics, streams."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc.aio
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.readiness import Readiness
from gateway.worker_metrics import WorkerMetrics

if TYPE_CHECKING:
    from scriptgen.v1.generation_service_pb2_grpc import GenerationServiceAsyncStub
    from scriptgen.v1.project_service_pb2_grpc import ProjectServiceAsyncStub

    from gateway.core_relay import CoreRelay
    from gateway.sse import EventRelay


@dataclass(frozen=True, slots=True)
class CoreStubs:
    """The one channel to the core and the stubs that use it."""

    channel: grpc.aio.Channel
    projects: ProjectServiceAsyncStub
    generations: GenerationServiceAsyncStub
    #: SSE streams go over a few Relay calls (gateway.core_relay); None: a call each.
    relay: CoreRelay | None = None


#: gRPC metadata sent with every call made for one HTTP request.
CallMetadata = tuple[tuple[str, str], ...]

CONFIG = web.AppKey("config", GatewayConfig)
METRICS = web.AppKey("metrics", GatewayMetrics)
CORE = web.AppKey("core", CoreStubs)
READINESS = web.AppKey("readiness", Readiness)
#: With `--workers`: this worker's share of the workers' metrics (gateway.worker_metrics).
WORKER_METRICS = web.AppKey("worker_metrics", WorkerMetrics)
#: Event streams open right now, so shutdown can end them cleanly.
RELAYS: web.AppKey[set[EventRelay]] = web.AppKey("relays")


class Stopping:
    """How far this process's stop has come (gateway.server.GatewayServer.stop).

    Announced: `/readyz` answers 503, so load balancers stop sending new requests, while
    the process still serves what comes (`--stop-delay-seconds`). Draining: the listener
    is closed and every event stream, one opened late included, ends after what it holds.
    """

    __slots__ = ("announced", "draining")

    def __init__(self) -> None:
        self.announced = False
        self.draining = False

    def announce(self) -> None:
        self.announced = True

    def drain(self) -> None:
        self.announced = self.draining = True


STOPPING = web.AppKey("stopping", Stopping)

REQUEST_ID = web.RequestKey("request_id", str)
#: The id of the request being answered, for log lines of code that has no `request`
#: at hand (error decoding; an SSE relay's task, which inherits it).
CURRENT_REQUEST_ID: ContextVar[str] = ContextVar("scriptgen_gateway_request_id", default="")
CALL_METADATA: web.RequestKey[CallMetadata] = web.RequestKey("call_metadata")


def call_metadata(request: web.Request) -> CallMetadata:
    """The metadata each call made for `request` carries (`x-request-id`, provider hints)."""
    try:
        return request[CALL_METADATA]
    except KeyError:
        return ()


def unary_deadline(request: web.Request) -> float:
    """Seconds a unary call made for `request` may take."""
    return request.app[CONFIG].unary_deadline_seconds
