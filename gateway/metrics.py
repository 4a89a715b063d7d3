"""The gateway's Prometheus instruments, in a registry of their own per app.

A registry per app (never the process-global one) lets several gateways run in
one process — tests, `scriptgen serve` — without clashing series.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from scriptgen._loop_lag import loop_lag_histogram

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Time to first event spans a queue wait plus the model's first token, so the
# buckets reach further than an API latency histogram's would.
_FIRST_EVENT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """Every series the gateway exports."""

    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    time_to_first_event: Histogram
    active_streams: Gauge
    ready: Gauge
    readiness_transitions: Counter
    auth_rejections: Counter
    rate_limit_rejections: Counter
    #: How late this process's event loop runs what is due (scriptgen._loop_lag).
    event_loop_lag: Histogram

    @classmethod
    def create(cls) -> GatewayMetrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            requests=Counter(
                "scriptgen_http_requests",
                "HTTP requests answered, by route template, method and status.",
                ["route", "method", "status"],
                registry=registry,
            ),
            request_duration=Histogram(
                "scriptgen_http_request_duration_seconds",
                "Time to answer an HTTP request; for event streams, the stream's lifetime.",
                ["route", "method"],
                registry=registry,
            ),
            time_to_first_event=Histogram(
                "scriptgen_gateway_time_to_first_event_seconds",
                "From an event-stream request to its first job event written to the client.",
                ["route"],
                buckets=_FIRST_EVENT_BUCKETS,
                registry=registry,
            ),
            active_streams=Gauge(
                "scriptgen_gateway_active_streams",
                "Server-Sent Event streams open to clients.",
                registry=registry,
            ),
            ready=Gauge(
                "scriptgen_gateway_ready",
                "1 while the core's health watch says SERVING, else 0.",
                registry=registry,
            ),
            readiness_transitions=Counter(
                "scriptgen_gateway_readiness_transitions",
                "Changes of readiness, by the state entered.",
                ["to"],
                registry=registry,
            ),
            # Defined ahead of the API-key and rate-limit features that will count them.
            auth_rejections=Counter(
                "scriptgen_auth_rejections",
                "Requests refused for missing, unknown or revoked credentials, by reason.",
                ["reason"],
                registry=registry,
            ),
            rate_limit_rejections=Counter(
                "scriptgen_rate_limit_rejections",
                "Requests refused by a rate or concurrency limit, by limit.",
                ["limit"],
                registry=registry,
            ),
            event_loop_lag=loop_lag_histogram(registry),
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
