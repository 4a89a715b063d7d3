"""What a load run does: its target, shape and bounds, checked once before anything starts.

The tool only ever talks to this machine: every target must be a loopback
address (127.0.0.0/8, ::1 or `localhost`), and every run is bounded in
streams, duration and setup time, so a typo cannot turn it on a real service.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scriptgen._errors import ScriptgenError

#: Hard upper bounds of one run.
MAX_STREAMS = 5000
MAX_DURATION_SECONDS = 3600.0
MAX_PROJECTS = 1000
MAX_WORKERS = 16


class LoadTestError(ScriptgenError):
    """A run could not be set up: a refused target, a bound exceeded, a server not ready."""


class Protocol(enum.Enum):
    """How the streams reach the core."""

    SSE = "sse"  # through the gateway: POST …/generations with Accept: text/event-stream
    GRPC = "grpc"  # straight to the core: GenerationService.GenerateScript


@dataclass(frozen=True, slots=True)
class Target:
    """Where the streams go: a gateway base URL (SSE) or a core host:port (gRPC)."""

    protocol: Protocol
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The gateway's base URL (SSE targets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        """The core's gRPC target (gRPC targets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.base_url if self.protocol is Protocol.SSE else self.grpc_target


@dataclass(frozen=True, slots=True)
class SyntheticPace:
    """How the synthetic writer of servers the tool starts itself is paced."""

    first_token_seconds: float = 0.3
    tokens_per_second: float = 30.0
    #: Tokens per TextDelta; None leaves the server's default (the flag may not exist).
    tokens_per_chunk: int | None = None


class ModelProvider(enum.Enum):
    """What writes the episodes of servers the tool starts itself."""

    SYNTHETIC = "synthetic"  # the core's offline writer, paced by the core
    #: The `openai` SDK against an OpenAI stand-in process paced like a real model
    #: (`_standin.py`): the write stage's one call per job; the plan is synthetic, unpaced.
    OPENAI_STANDIN = "openai-standin"


#: Bounds of the stand-in's reply length.
MAX_REPLY_TOKENS = 20000


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run. Build it with `load_config` to have it checked."""

    #: The target; None with `spawn`, where the tool starts the servers itself.
    target: Target | None
    protocol: Protocol
    streams: int
    #: Seconds over which the streams start evenly; 0 starts them all at once (burst).
    ramp_seconds: float = 0.0
    #: Cap on the measured phase: streams still open then are cut (not errors).
    duration_seconds: float = 120.0
    #: Hold every stream open this long once all have their first event, then close them.
    hold_seconds: float | None = None
    #: Cap on setup: starting servers, readiness, creating projects, starting workers.
    setup_timeout_seconds: float = 60.0
    #: Projects the generations are spread over, round-robin.
    projects: int = 1
    #: Client processes; 0 runs the streams in this process.
    workers: int = 0
    #: Start `scriptgen server` (and `gateway` for SSE) on free loopback ports.
    spawn: bool = False
    pace: SyntheticPace = field(default_factory=SyntheticPace)
    #: The writer of spawned servers; with the stand-in, `pace` paces the stand-in.
    provider: ModelProvider = ModelProvider.SYNTHETIC
    #: Tokens of each stand-in reply (OPENAI_STANDIN only).
    reply_tokens: int = 600
    #: Extra flags of the `scriptgen server` / `scriptgen gateway` the tool starts.
    server_args: tuple[str, ...] = ()
    gateway_args: tuple[str, ...] = ()
    #: Server processes to measure besides the ones found or started.
    server_pids: tuple[int, ...] = ()
    #: Seconds between CPU/RSS samples of the server processes.
    sample_interval_seconds: float = 0.5
    #: The command line that asked for this run, for the report.
    command_line: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        """`burst`, `ramp` or `hold`."""
        if self.hold_seconds is not None:
            return "hold"
        return "ramp" if self.ramp_seconds > 0 else "burst"


def parse_http_target(url: str) -> Target:
    """`http://127.0.0.1:8080` as an SSE target; refuses anything off this machine."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise LoadTestError(f"--target-http must look like http://127.0.0.1:PORT, not {url!r}")
    if parts.path not in ("", "/"):
        raise LoadTestError(f"--target-http takes the gateway's base URL, without a path: {url!r}")
    return Target(Protocol.SSE, check_loopback(parts.hostname), parts.port)


def parse_grpc_target(address: str) -> Target:
    """`127.0.0.1:50051` as a gRPC target; refuses anything off this machine."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LoadTestError(f"--target-grpc must look like 127.0.0.1:PORT, not {address!r}")
    return Target(Protocol.GRPC, check_loopback(host), int(port))


def check_loopback(host: str) -> str:
    """`host` when it is this machine's loopback; LoadTestError otherwise."""
    refusal = LoadTestError(
        f"refusing target host {host!r}: the load tool only runs against this machine's"
        " loopback (127.0.0.0/8, ::1, localhost)"
    )
    if host.lower() == "localhost":
        try:
            resolved = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except OSError as error:
            raise LoadTestError(f"cannot resolve {host!r}: {error}") from error
        if not resolved or not all(is_loopback_address(address) for address in resolved):
            raise refusal
        return host
    if not is_loopback_address(host):
        raise refusal
    return host


def plain_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IP address `address` names (an IPv6 scope dropped), an IPv4 one in IPv6 form
    (`::ffff:127.0.0.1`, how a dual-stack socket names an IPv4 peer) as IPv4. ValueError
    when it is not an IP address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


def is_loopback_address(address: str) -> bool:
    """Whether `address` is a loopback IP address, in either form (`plain_ip`: Python 3.11's
    `is_loopback` does not take `::ffff:127.0.0.1` for loopback)."""
    try:
        return plain_ip(address).is_loopback
    except ValueError:
        return False


def auto_workers(streams: int) -> int:
    """Client processes for `streams`: none (in-process) for small runs, else one per 500."""
    if streams <= 200:
        return 0
    return max(1, min(os.cpu_count() or 1, math.ceil(streams / 500), MAX_WORKERS))


def check_bounds(config: LoadConfig) -> None:
    """Raise LoadTestError when `config` leaves the tool's bounds."""
    if not 1 <= config.streams <= MAX_STREAMS:
        raise LoadTestError(f"--streams must be 1..{MAX_STREAMS}, not {config.streams}")
    if not 0 < config.duration_seconds <= MAX_DURATION_SECONDS:
        raise LoadTestError(
            f"--duration must be in (0, {MAX_DURATION_SECONDS:g}] seconds,"
            f" not {config.duration_seconds:g}"
        )
    if not 0 <= config.ramp_seconds < config.duration_seconds:
        raise LoadTestError("--ramp-seconds must be at least 0 and shorter than --duration")
    if config.hold_seconds is not None and not (
        config.hold_seconds > 0
        and config.ramp_seconds + config.hold_seconds <= config.duration_seconds
    ):
        raise LoadTestError("--hold must be positive and fit in --duration after the ramp")
    if not 0 < config.setup_timeout_seconds <= 600:
        raise LoadTestError("--setup-timeout must be in (0, 600] seconds")
    if not 1 <= config.projects <= min(MAX_PROJECTS, config.streams):
        raise LoadTestError(f"--projects must be 1..min({MAX_PROJECTS}, --streams)")
    if not 0 <= config.workers <= MAX_WORKERS:
        raise LoadTestError(f"--workers must be 0..{MAX_WORKERS}")
    if not 0.05 <= config.sample_interval_seconds <= 10:
        raise LoadTestError("--sample-interval must be in [0.05, 10] seconds")
    if config.spawn == (config.target is not None):
        raise LoadTestError("give exactly one of --target-http, --target-grpc or --spawn")
    if (config.server_args or config.gateway_args) and not config.spawn:
        raise LoadTestError("--server-arg and --gateway-arg go with --spawn")
    if config.provider is not ModelProvider.SYNTHETIC and not config.spawn:
        raise LoadTestError("--provider goes with --spawn")
    if not 1 <= config.reply_tokens <= MAX_REPLY_TOKENS:
        raise LoadTestError(f"--reply-tokens must be 1..{MAX_REPLY_TOKENS}")
    if config.target is not None and config.target.protocol is not config.protocol:
        raise LoadTestError("the target's protocol and --protocol disagree")
    pace = config.pace
    if pace.first_token_seconds < 0 or pace.tokens_per_second < 0:
        raise LoadTestError("--ttft and --tokens-per-second must not be negative")
    if pace.tokens_per_chunk is not None and pace.tokens_per_chunk < 1:
        raise LoadTestError("--tokens-per-chunk must be at least 1")
