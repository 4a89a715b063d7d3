"""Gateway configuration: one frozen dataclass built once at start, then passed down.

Every setting is a command-line flag with a `SCRIPTGEN_*` environment variable
as its default; `add_arguments` declares them and `from_arguments` builds the
config, so nothing deeper in the gateway reads the environment. Flag names are
distinct from the core's so `scriptgen serve` can put both on one parser.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from scriptgen._listen import listen_address

from gateway.core_target import names_one_address

DEFAULT_CORE_TARGET = "127.0.0.1:50051"
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"
#: Pending connections the HTTP listener queues by default, and the most it accepts.
DEFAULT_LISTEN_BACKLOG = 1024
MAX_LISTEN_BACKLOG = 65535
#: Most Relay calls one gateway process keeps to the core.
MAX_RELAY_CALLS = 64
#: Relay calls per gateway process when the core target may name several cores: the
#: channel balances calls, not streams, so several calls spread the streams over them.
SPREAD_RELAY_CALLS = 4
#: gRPC load-balancing policies the gateway's channel to the core may use.
CORE_LOAD_BALANCING = ("round_robin", "pick_first")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything the gateway needs to run."""

    #: host:port (or any gRPC target) of the core.
    core_target: str = DEFAULT_CORE_TARGET
    #: How calls spread over the addresses `core_target` resolves to: `round_robin`
    #: (every core behind a `dns:///` name or an `ipv4:` list takes its share) or
    #: `pick_first` (one core until it fails).
    core_load_balancing: str = "round_robin"
    #: Long-lived Relay calls that carry this process's SSE streams to the core
    #: (gateway.core_relay); 0: a gRPC call per stream, as before the relay; None (`auto`):
    #: as many as `relay_calls()` finds for `core_target`.
    core_relay_calls: int | None = None
    #: After this long a Relay call takes no new streams (it ends with its last one).
    core_relay_max_age_seconds: float = 300.0
    #: host:port the HTTP server listens on; port 0 picks a free one.
    http_address: str = DEFAULT_HTTP_ADDRESS
    #: Reconnection delay sent to EventSource clients as `retry:`, in milliseconds.
    sse_retry_ms: int = 3000
    #: A stream with nothing written for this long gets a `: ping` comment.
    ping_interval_seconds: float = 15.0
    #: How long an SSE request waits for the job's first event before answering
    #: 200; errors seen within this window are still plain HTTP errors.
    first_event_wait_seconds: float = 5.0
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1024 * 1024
    #: Deadline of each unary call to the core, in seconds.
    unary_deadline_seconds: float = 10.0
    #: First and longest pause between attempts to re-watch the core's health.
    readiness_backoff_seconds: float = 0.2
    readiness_backoff_max_seconds: float = 5.0
    #: On stop, how long open requests get to finish before they are cancelled (those
    #: cancelled then get as long again to end).
    drain_seconds: float = 5.0
    #: On stop, how long `/readyz` answers 503 while requests are still served, before the
    #: listener closes: load balancers that probe readiness stop sending new requests
    #: first. 0 (the default) for Kubernetes, whose preStop hook waits instead.
    stop_delay_seconds: float = 0.0
    #: Largest gRPC message accepted from the core, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: SSE streams this process serves at once; more get 429 with Retry-After; 0: no limit.
    max_streams: int = 0
    #: Origins allowed to call the API from another site (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    #: Listen with SO_REUSEPORT, so several gateway processes share one port.
    reuse_port: bool = False
    #: Set by `--workers`' supervisor for each of its workers: the folder they share their
    #: metrics through, and this worker's name there (gateway.worker_metrics). Empty: a
    #: process of its own, whose `/metrics` holds its series alone.
    worker_metrics_dir: str = ""
    worker_name: str = ""
    #: Connections the kernel queues for accepting (it caps this at net.core.somaxconn).
    #: A burst of new streams larger than the queue loses SYNs, and their clients wait
    #: for TCP's retransmission: 1 s, then 3 s, then 7 s.
    listen_backlog: int = DEFAULT_LISTEN_BACKLOG

    def relay_calls(self) -> int:
        """The Relay calls to keep: `core_relay_calls` when it is set, else (`auto`) one when
        every call would reach the same core over the same HTTP/2 connection (a target of
        one address, or `pick_first`), else SPREAD_RELAY_CALLS. On one connection more
        calls spread nothing, and each writes its own messages, which cost both ends
        whatever they hold (`scriptgen._relay_cadence`; BENCHMARKS.md, session 25)."""
        if self.core_relay_calls is not None:
            return self.core_relay_calls
        if self.core_load_balancing == "pick_first" or names_one_address(self.core_target):
            return 1
        return SPREAD_RELAY_CALLS

    @property
    def http_host(self) -> str:
        host, _, _ = self.http_address.rpartition(":")
        return host.strip("[]") or "0.0.0.0"

    @property
    def http_port(self) -> int:
        _, _, port = self.http_address.rpartition(":")
        return int(port)


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(f"SCRIPTGEN_{name}", default)


def add_arguments(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    *,
    http_address: str = DEFAULT_HTTP_ADDRESS,
) -> None:
    """Declare the gateway's flags on `parser`, defaulting to `SCRIPTGEN_*` variables."""
    env = os.environ if environ is None else environ
    group = parser.add_argument_group("gateway")
    group.add_argument(
        "--core-target",
        default=_env(env, "CORE_TARGET", DEFAULT_CORE_TARGET),
        help="gRPC target of the core, e.g. dns:///scriptgen-core-headless:50051 for every"
        " core behind a headless Service [SCRIPTGEN_CORE_TARGET] (default: %(default)s)",
    )
    group.add_argument(
        "--core-load-balancing",
        choices=CORE_LOAD_BALANCING,
        default=_env(env, "CORE_LOAD_BALANCING", "round_robin"),
        help="how calls spread over the core addresses the target resolves to"
        " [SCRIPTGEN_CORE_LOAD_BALANCING] (default: %(default)s)",
    )
    group.add_argument(
        "--core-relay-calls",
        default=_env(env, "CORE_RELAY_CALLS", "auto"),
        help=f"Relay calls carrying this process's SSE streams to the core, 0..{MAX_RELAY_CALLS};"
        " 0 gives every stream its own call; auto: 1 when the core target is one address (or"
        f" the balancing pick_first), else {SPREAD_RELAY_CALLS} [SCRIPTGEN_CORE_RELAY_CALLS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--core-relay-max-age-seconds",
        type=float,
        default=_env(env, "CORE_RELAY_MAX_AGE_SECONDS", "300"),
        help="after this long a Relay call takes no new streams, so they reach cores started"
        " since [SCRIPTGEN_CORE_RELAY_MAX_AGE_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--http-address",
        default=_env(env, "HTTP_ADDRESS", http_address),
        help="HTTP listen address [SCRIPTGEN_HTTP_ADDRESS] (default: %(default)s)",
    )
    group.add_argument(
        "--sse-retry-ms",
        type=int,
        default=_env(env, "SSE_RETRY_MS", "3000"),
        help="reconnection delay announced to SSE clients [SCRIPTGEN_SSE_RETRY_MS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--ping-interval-seconds",
        type=float,
        default=_env(env, "PING_INTERVAL_SECONDS", "15"),
        help="idle time after which an SSE stream gets a ': ping' comment"
        " [SCRIPTGEN_PING_INTERVAL_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--first-event-wait-seconds",
        type=float,
        default=_env(env, "FIRST_EVENT_WAIT_SECONDS", "5"),
        help="how long an SSE request waits for its first event before answering"
        " [SCRIPTGEN_FIRST_EVENT_WAIT_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env(env, "MAX_BODY_BYTES", str(1024 * 1024)),
        help="largest request body accepted [SCRIPTGEN_MAX_BODY_BYTES] (default: %(default)s)",
    )
    group.add_argument(
        "--unary-deadline-seconds",
        type=float,
        default=_env(env, "UNARY_DEADLINE_SECONDS", "10"),
        help="deadline of unary calls to the core [SCRIPTGEN_UNARY_DEADLINE_SECONDS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--cors-origins",
        default=_env(env, "CORS_ORIGINS", ""),
        help="comma-separated origins allowed to call the API cross-site, e.g."
        " https://writers.example (empty: none) [SCRIPTGEN_CORS_ORIGINS]",
    )
    group.add_argument(
        "--drain-seconds",
        type=float,
        default=_env(env, "DRAIN_SECONDS", "5"),
        help="on stop, time open HTTP requests get to finish, 0.1..3600; those still open are"
        " then cancelled [SCRIPTGEN_DRAIN_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--stop-delay-seconds",
        type=float,
        default=_env(env, "STOP_DELAY_SECONDS", "0"),
        help="on stop, time /readyz answers 503 while requests are still served, before the"
        " listener closes, 0..3600 [SCRIPTGEN_STOP_DELAY_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--listen-backlog",
        type=int,
        default=_env(env, "LISTEN_BACKLOG", str(DEFAULT_LISTEN_BACKLOG)),
        help=f"connections queued for accepting, 1..{MAX_LISTEN_BACKLOG} (the kernel caps it at"
        " net.core.somaxconn) [SCRIPTGEN_LISTEN_BACKLOG] (default: %(default)s)",
    )
    group.add_argument(
        "--gateway-max-streams",
        type=int,
        default=_env(env, "GATEWAY_MAX_STREAMS", "0"),
        help="SSE streams one gateway process serves at once; more get 429 with Retry-After,"
        " 0 for no limit [SCRIPTGEN_GATEWAY_MAX_STREAMS] (default: %(default)s)",
    )


def from_arguments(namespace: argparse.Namespace) -> GatewayConfig:
    """Build the config from flags parsed by a parser given `add_arguments`."""
    return GatewayConfig(
        core_target=str(namespace.core_target),
        core_load_balancing=str(namespace.core_load_balancing),
        core_relay_calls=_relay_calls(str(namespace.core_relay_calls)),
        core_relay_max_age_seconds=_relay_max_age(float(namespace.core_relay_max_age_seconds)),
        http_address=listen_address(
            "--http-address (SCRIPTGEN_HTTP_ADDRESS)", str(namespace.http_address)
        ),
        sse_retry_ms=int(_within("--sse-retry-ms", int(namespace.sse_retry_ms), 0, 3_600_000)),
        ping_interval_seconds=_within(
            "--ping-interval-seconds", float(namespace.ping_interval_seconds), 0.1, 3600
        ),
        first_event_wait_seconds=_within(
            "--first-event-wait-seconds", float(namespace.first_event_wait_seconds), 0, 3600
        ),
        max_body_bytes=int(_within("--max-body-bytes", int(namespace.max_body_bytes), 1, 1024**3)),
        unary_deadline_seconds=_within(
            "--unary-deadline-seconds", float(namespace.unary_deadline_seconds), 0.1, 3600
        ),
        # aiohttp reads a drain of 0 as no bound at all.
        drain_seconds=_within("--drain-seconds", float(namespace.drain_seconds), 0.1, 3600),
        stop_delay_seconds=_within(
            "--stop-delay-seconds", float(namespace.stop_delay_seconds), 0, 3600
        ),
        max_streams=max(0, int(namespace.gateway_max_streams)),
        cors_origins=_origins(str(namespace.cors_origins)),
        listen_backlog=_backlog(int(namespace.listen_backlog)),
    )


def _relay_calls(value: str) -> int | None:
    """`--core-relay-calls`: None for `auto`, else the number, 0..MAX_RELAY_CALLS."""
    if value.strip().lower() == "auto":
        return None
    try:
        calls = int(value)
    except ValueError:
        calls = -1
    if not 0 <= calls <= MAX_RELAY_CALLS:
        raise ValueError(
            f"--core-relay-calls (SCRIPTGEN_CORE_RELAY_CALLS) must be auto or"
            f" 0..{MAX_RELAY_CALLS}, not {value!r}"
        )
    return calls


def _relay_max_age(value: float) -> float:
    if not value > 0:
        raise ValueError(f"--core-relay-max-age-seconds must be above 0, not {value}")
    return value


def _within(flag: str, value: float, low: float, high: float) -> float:
    """`value` when it is within low..high (NaN never is); else a ValueError naming `flag`."""
    if not low <= value <= high:
        raise ValueError(f"{flag} must be {low:g}..{high:g}, not {value:g}")
    return value


def _backlog(value: int) -> int:
    if not 1 <= value <= MAX_LISTEN_BACKLOG:
        raise ValueError(f"--listen-backlog must be 1..{MAX_LISTEN_BACKLOG}, not {value}")
    return value


def _origins(spec: str) -> tuple[str, ...]:
    """Parse SCRIPTGEN_CORS_ORIGINS; ValueError for anything but `scheme://host[:port]`."""
    origins = []
    for entry in spec.split(","):
        origin = entry.strip().rstrip("/")
        if not origin:
            continue
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"CORS origin {origin!r} must look like https://host[:port]")
        origins.append(origin)
    return tuple(origins)
