"""The core's Prometheus metrics, in a registry of its own so several cores can share a process."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from scriptgen._loop_lag import loop_lag_histogram

from server.loop_histogram import LoopHistogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CoreMetrics:
    """Every metric the core exports, named `scriptgen_*` in base units."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.grpc_requests = Counter(
            "scriptgen_grpc_requests",
            "gRPC calls handled by the core, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "scriptgen_jobs",
            "Generation jobs that ended, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs_active = Gauge(
            "scriptgen_jobs_active", "Generation jobs running in this core.", registry=self.registry
        )
        self.streams_active = Gauge(
            "scriptgen_streams_active",
            "Open server-streaming calls following a job's events.",
            registry=self.registry,
        )
        self.events = Counter(
            "scriptgen_events",
            "Events appended to job logs, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.time_to_first_event = Histogram(
            "scriptgen_core_time_to_first_event_seconds",
            "From a streaming call's start to its first event sent.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "scriptgen_time_to_first_token_seconds",
            "From a provider call's start to its first text chunk.",
            ["provider", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "scriptgen_tokens",
            "Tokens sent to (in) and received from (out) providers.",
            ["provider", "direction"],
            registry=self.registry,
        )
        self.generation_duration = Histogram(
            "scriptgen_generation_duration_seconds",
            "From a job's start to its terminal event.",
            ["outcome"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.serving = Gauge(
            "scriptgen_core_serving",
            "1 when the core's health for a service is SERVING.",
            ["service"],
            registry=self.registry,
        )
        self.readiness_transitions = Counter(
            "scriptgen_core_readiness_transitions",
            'Changes of the core\'s overall health status (service ""), by new status.',
            ["status"],
            registry=self.registry,
        )
        self.provider_texts_cut = Counter(
            "scriptgen_provider_texts_cut",
            "Stage texts that ended at the output cap because the provider was still cut there"
            " after the continuations allowed (server.providers.router.MAX_CONTINUATIONS).",
            ["provider", "stage"],
            registry=self.registry,
        )
        self.provider_requests = Counter(
            "scriptgen_provider_requests",
            "Calls to language-model providers, by provider and outcome"
            " (ok, rate_limited, server_error, timeout, connection, worker_lost, malformed,"
            " first_token_timeout, idle_timeout, deadline, bad_request, auth, cancelled).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.provider_fallbacks = Counter(
            "scriptgen_provider_fallbacks",
            "Moves from one provider to the next after a failure; mid_stream when text was"
            " already delivered.",
            ["from_provider", "to_provider", "mid_stream"],
            registry=self.registry,
        )
        self.provider_breaker_state = Gauge(
            "scriptgen_provider_breaker_state",
            "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=self.registry,
        )
        self.provider_workers = Gauge(
            "scriptgen_provider_workers",
            "Provider worker processes running and ready (--provider-workers; 0 when the"
            " model calls run in the core).",
            registry=self.registry,
        )
        self.knowledge_index_retries = Gauge(
            "scriptgen_knowledge_index_retries",
            "Saved episodes waiting to be indexed again in story knowledge after Chroma was"
            " down (this core; server/knowledge/index_retries.py).",
            registry=self.registry,
        )
        self.provider_worker_restarts = Counter(
            "scriptgen_provider_worker_restarts",
            "Provider worker processes started again after one exited; its calls went on"
            " on the next (outcome worker_lost).",
            registry=self.registry,
        )
        #: Observed before every piece of text, on the loop's thread: a lock-free histogram.
        self.inter_token_latency = LoopHistogram(
            "scriptgen_inter_token_latency_seconds",
            "Time between consecutive pieces of text a stage takes from its provider (a piece"
            " carries one or more tokens; a body read once per delta cut gives one per window).",
            ["stage"],
            buckets=_INTER_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.jobs_capacity = Gauge(
            "scriptgen_jobs_capacity",
            "Most generation jobs this core runs at once; more are refused (TOO_MANY_JOBS).",
            registry=self.registry,
        )
        # Defined ahead of the features that count them (API keys, rate limits) so alert
        # rules and dashboards can name them now; a family with no series exports 0 samples.
        self.auth_rejections = Counter(
            "scriptgen_auth_rejections",
            "Calls refused for missing, unknown or revoked credentials, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limit_rejections = Counter(
            "scriptgen_rate_limit_rejections",
            "Calls refused by a rate or concurrency limit, by limit.",
            ["limit"],
            registry=self.registry,
        )
        #: How late the event loop runs what is due (scriptgen._loop_lag).
        self.event_loop_lag = loop_lag_histogram(self.registry)

    def inter_token_clock(self, stage: str) -> Callable[[], None]:
        """A tick for each piece of text of one stream, on the loop's thread; observes the gap
        since the previous tick. Called once per token of a token-per-chunk model, so it is
        the histogram's `observe` written out."""
        child = self.inter_token_latency.labels(stage)
        counts, bounds = child.counts, child.bounds
        monotonic = time.monotonic
        previous = -1.0

        def tick() -> None:
            nonlocal previous
            now = monotonic()
            if previous >= 0.0:
                gap = now - previous
                counts[bisect_left(bounds, gap)] += 1
                child.sum += gap
            previous = now

        return tick


# Streams deliver a delta every few milliseconds to a few seconds.
_INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
