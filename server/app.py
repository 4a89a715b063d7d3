"""The core process: wires the stores, the job runner and the servicers into one grpc.aio server.

Start and stop are explicit so tests run real cores on port 0. Stopping is
graceful: health turns NOT_SERVING first, new jobs are refused, running jobs
get the grace period to finish and are then cancelled (each ends with its
terminal event, unless it cannot end within SHUTDOWN_CANCEL_SECONDS), open
streams deliver those events, then the listener and the parts close, each
wait bounded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from scriptgen._grpc_wakeups import GrpcWakeupDrain, drain_grpc_wakeups
from scriptgen._heap import freeze_startup_heap, thaw_heap
from scriptgen._loop_lag import LoopLagMonitor
from scriptgen.v1 import (
    generation_service_pb2,
    generation_service_pb2_grpc,
    project_service_pb2,
    project_service_pb2_grpc,
    relay_service_pb2_grpc,
)

from server.admission import StreamAdmission
from server.auth.guard import Guard
from server.auth.job_tokens import JobTokens
from server.auth.settings import is_loopback
from server.config import CoreConfig
from server.health import CoreHealth
from server.jobs import JobRunner
from server.jobs.backends import build_job_backends
from server.jobs.runner import SHUTDOWN_CANCEL_SECONDS
from server.knowledge import ChromaKnowledgeBase, build_knowledge_base
from server.knowledge.factory import saved_episodes
from server.left_tasks import leave
from server.limits import transport_message_max
from server.metrics import CoreMetrics
from server.providers.factory import build_providers
from server.providers.router import ProviderRouter
from server.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from server.services import GenerationServicer, ProjectServicer
from server.services.decoding import LenientDecoding
from server.services.encoding import EncodedResponses
from server.services.relay import RelayServicer
from server.storage_probes import local_storage_probes
from server.store import build_project_store

log = logging.getLogger(__name__)
#: At shutdown, how long the parts of the core (its provider workers, store, knowledge,
#: job log, metrics endpoint) get to close, all together; one cut short is cancelled and
#: gets CLOSE_CLEANUP_SECONDS more (a provider worker is killed then). The job watch, stopped
#: before them, gets the same.
CLOSE_SECONDS = 5.0
CLOSE_CLEANUP_SECONDS = 1.0
#: Once the jobs have ended, how long open streams get to deliver their last events.
STREAMS_SECONDS = 5.0
#: The longest a stop takes after the grace: the jobs' cancellation, the job watch, the
#: streams, the parts. A deployment's termination grace covers preStop + grace + this.
AFTER_GRACE_SECONDS = (
    SHUTDOWN_CANCEL_SECONDS + 2 * (CLOSE_SECONDS + CLOSE_CLEANUP_SECONDS) + STREAMS_SECONDS
)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Core:
    """One running core: gRPC services, health, reflection and /metrics."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.metrics = CoreMetrics()
        self.metrics.jobs_capacity.set(config.max_running_jobs)
        self.store = build_project_store(config.database_url, config.data_dir)
        self.knowledge = build_knowledge_base(
            config, owners=self.store.first_owner, saved=saved_episodes(self.store)
        )
        if isinstance(self.knowledge, ChromaKnowledgeBase):
            knowledge = self.knowledge
            self.metrics.knowledge_index_retries.set_function(
                lambda: knowledge.waiting_index_retries
            )
        self.jobs = build_job_backends(config)
        self.event_log = self.jobs.event_log
        self.registry = self.jobs.registry
        self.providers = build_providers(
            config.providers,
            config.synthetic,
            workers=config.provider_workers,
            window_seconds=config.delta_window_seconds,
        )
        if self.providers.workers is not None:
            workers = self.providers.workers
            self.metrics.provider_workers.set_function(lambda: workers.live)
            workers.on_restart = self.metrics.provider_worker_restarts.inc
        self.router = ProviderRouter(self.providers.names(), config.providers.router, self.metrics)
        self.runner = JobRunner(
            config=config,
            store=self.store,
            log=self.event_log,
            registry=self.registry,
            router=self.router,
            providers=self.providers,
            metrics=self.metrics,
            coordination=self.jobs.coordination,
            knowledge=self.knowledge,
        )
        self.health = CoreHealth(
            {
                "project store": self.store,
                "story knowledge": self.knowledge,
                "job state": self.jobs,
                **local_storage_probes(config),
            },
            self.metrics,
            self.router,
        )
        limiter: Limiter = (
            MemoryLimiter() if self.jobs.redis is None else RedisLimiter(self.jobs.redis)
        )
        self.guard = Guard(config.auth, self.store, limiter, self.metrics)
        self._server: aio.Server | None = None
        self._wakeups: GrpcWakeupDrain | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.grpc_port = 0
        self.metrics_port: int | None = None
        self._relay: RelayServicer | None = None
        #: GenerationService's servicer, once the server is built (in-process measures call it).
        self.generation_servicer: GenerationServicer | None = None
        self._loop_lag = LoopLagMonitor(self.metrics.event_loop_lag)

    async def start(self) -> None:
        """Open the stores and start serving."""
        await self._open_stores()
        options = [
            # Well above the documented limit, so LenientDecoding sees an oversized
            # request and refuses it as INVALID_ARGUMENT (server.limits).
            (
                "grpc.max_receive_message_length",
                transport_message_max(self.config.max_message_bytes),
            ),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if self.config.max_connection_age_seconds > 0:
            # GOAWAY after this age: balancing clients re-resolve and spread again.
            options += [
                ("grpc.max_connection_age_ms", int(self.config.max_connection_age_seconds * 1000)),
                (
                    "grpc.max_connection_age_grace_ms",
                    int(self.config.max_connection_age_grace_seconds * 1000),
                ),
            ]
        # Before the server: grpc.aio starts here, and its wake-ups are found as it does.
        self._wakeups = drain_grpc_wakeups()
        try:
            server = self._grpc_server(options)
            try:
                # grpc 1.85 raises where older releases returned 0; treat both alike.
                self.grpc_port = server.add_insecure_port(self.config.grpc_address)
            except RuntimeError:
                self.grpc_port = 0
            if self.grpc_port == 0:
                await self.providers.aclose()
                await self._close_quietly([self.jobs.close, self.knowledge.close, self.store.close])
                raise OSError(f"cannot listen on {self.config.grpc_address}")
            await server.start()
        except BaseException:
            self._stop_draining()
            raise
        self._server = server
        self.runner.start_watching()
        freeze_startup_heap()  # scriptgen._heap: no full-heap pauses in a burst
        self._loop_lag.start()
        await self.health.start()
        if self.config.metrics_address is not None:
            await self._start_metrics(self.config.metrics_address)
        log.info(
            "core serving gRPC on port %d (providers: %s)",
            self.grpc_port,
            ", ".join(self.providers.names()),
        )

    def _grpc_server(self, options: Sequence[tuple[str, int | str]]) -> aio.Server:
        """The gRPC server with every service of the core on it (not listening yet)."""
        server = aio.server(
            options=options,
            interceptors=[LenientDecoding(self.config.max_message_bytes), EncodedResponses()],
        )
        project_service_pb2_grpc.add_ProjectServiceServicer_to_server(
            ProjectServicer(self.store, self.metrics, knowledge=self.knowledge, guard=self.guard),
            server,
        )
        generations = GenerationServicer(
            self.runner,
            self.event_log,
            self.registry,
            self.metrics,
            guard=self.guard,
            admission=StreamAdmission(self.config.max_streams, self.metrics),
        )
        generation_service_pb2_grpc.add_GenerationServiceServicer_to_server(generations, server)
        self.generation_servicer = generations
        # The gateway's streams, many per call; internal, so not offered by reflection.
        self._relay = RelayServicer(generations)
        relay_service_pb2_grpc.add_RelayServiceServicer_to_server(self._relay, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        reflection.enable_server_reflection(
            (
                project_service_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name,
                generation_service_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    async def _open_stores(self) -> None:
        """Open every store in order; when one fails, close those already open, then raise."""
        steps = [
            (self.store.open, self.store.close),
            (self.knowledge.open, self.knowledge.close),
            (self.jobs.open, self.jobs.close),
        ]
        opened: list[Callable[[], Awaitable[None]]] = []
        try:
            for open_store, close_store in steps:
                await open_store()
                opened.append(close_store)
            await self._open_auth()
            await self.providers.start()  # provider workers, if any
        except BaseException:
            await self.providers.aclose()
            await self._close_quietly(list(reversed(opened)))
            raise

    @staticmethod
    async def _close_quietly(closers: list[Callable[[], Awaitable[None]]]) -> None:
        # Already failing: a second error while releasing must not hide the first.
        for close in closers:
            try:
                await close()
            except Exception:
                log.exception("while releasing a store after a failed start")

    async def _open_auth(self) -> None:
        """Job tokens signed with the configured secret, else one kept in the project store."""
        auth = self.config.auth
        if not auth.enabled:
            # from_arguments refuses this beyond loopback; a CoreConfig built by hand is warned.
            level = logging.WARNING if is_loopback(self.config.grpc_address) else logging.ERROR
            log.log(
                level,
                "API keys are DISABLED (SCRIPTGEN_AUTH=disabled): every caller is tenant"
                " 'default' with no limits; only for local development on loopback",
            )
            return
        secret = auth.token_secret or await self.store.shared_secret(
            "job-token", secrets.token_hex(32)
        )
        self.guard.tokens = JobTokens(secret.encode(), auth.job_token_seconds)

    async def _start_metrics(self, address: str) -> None:
        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.metrics.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = _split_address(address)
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._metrics_runner = runner
        sockets = [s for s in runner.addresses if isinstance(s, tuple)]
        self.metrics_port = int(sockets[0][1]) if sockets else port

    async def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully: NOT_SERVING, refuse new jobs, drain, then close."""
        if self._server is None:
            return
        grace_seconds = self.config.shutdown_grace_seconds if grace is None else grace
        log.info("core shutting down: health NOT_SERVING, draining jobs")
        await self.health.shut_down()
        self.runner.stop_accepting()
        if self._relay is not None:
            self._relay.shut_down()  # gateways' Relay calls end with their last stream
        await self.runner.drain(grace_seconds)
        await _close({"the job watch": self.runner.stop_watching()})
        # A process that starts cores again (tests, embedding) must not keep every dead one.
        thaw_heap()
        # Jobs have ended, so open streams are delivering their last events; give them a moment.
        await self._server.stop(grace=min(STREAMS_SECONDS, max(grace_seconds, 0.5)))
        self._server = None
        self._loop_lag.stop()
        self._stop_draining()
        parts = {
            "the provider workers": self.providers.aclose(),
            "the project store": self.store.close(),
            "story knowledge": self.knowledge.close(),
            "the job log": self.jobs.close(),
        }
        if self._metrics_runner is not None:
            parts["the metrics endpoint"] = self._metrics_runner.cleanup()
            self._metrics_runner = None
        await _close(parts)
        log.info("core stopped")

    def _stop_draining(self) -> None:
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups = None

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def _close(parts: Mapping[str, Awaitable[None]]) -> None:
    """Close the parts (name: its closing) together, for at most CLOSE_SECONDS: one that
    fails or hangs (a database gone away) is logged, and the others close all the same.
    One cut short is cancelled and gets CLOSE_CLEANUP_SECONDS to clean up; a part that
    ignores its cancellation is left behind."""
    names = {asyncio.ensure_future(closing): what for what, closing in parts.items()}
    try:
        _, late = await asyncio.wait(names, timeout=CLOSE_SECONDS)
        for task in late:
            log.error(
                "shutdown: closing %s took more than %gs; going on", names[task], CLOSE_SECONDS
            )
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CLOSE_CLEANUP_SECONDS)
    except BaseException:
        # The stop itself was cancelled: the parts' closes are too, and left to end.
        for task, what in names.items():
            task.cancel()
            leave(task, f"closing {what}")
        raise
    for task, what in names.items():
        if not task.done():
            leave(task, f"closing {what}")
        elif not task.cancelled() and task.exception() is not None:
            log.error("shutdown: closing %s failed; going on", what, exc_info=task.exception())


__all__ = ["Core"]
