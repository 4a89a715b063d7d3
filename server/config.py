"""Core configuration: one frozen dataclass built once at start, then passed down.

Every setting is a command-line flag with a `SCRIPTGEN_*` environment variable
as its default; `add_arguments` declares them and `from_arguments` builds the
config, so nothing deeper in the core reads the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scriptgen._listen import listen_address
from scriptgen._switches import parse_switch

from server.auth.settings import (
    AuthConfig,
    add_auth_arguments,
    auth_from_arguments,
    check_disabled_auth,
)
from server.knowledge.settings import (
    KnowledgeConfig,
    add_knowledge_arguments,
    knowledge_from_arguments,
)
from server.store.factory import check_database_url

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
DEFAULT_DATA_DIR = "scriptgen-data"
#: The most provider worker processes one core starts (`--provider-workers`).
MAX_PROVIDER_WORKERS = 16


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """The offline, deterministic writer used when no LLM provider is configured."""

    #: Delay before the first token of each stage, in seconds.
    first_token_seconds: float = 0.3
    #: Tokens written per second; 0 writes as fast as the event loop allows.
    tokens_per_second: float = 40.0
    #: Tokens per emitted chunk (a chunk becomes one TextDelta).
    tokens_per_chunk: int = 1
    #: Least time between two wake-ups of one stream; tokens due meanwhile go out as one
    #: chunk. 0 writes every chunk at its own time, like a model; `scriptgen server` sets
    #: it to the delta window, since the coalescer would join finer wake-ups anyway.
    min_wake_seconds: float = 0.0
    #: Episode length in minutes when the project sets none; 0: a short demo of four scenes.
    episode_minutes: int = 0
    #: Unlimited pace (tokens_per_second 0): tokens per chunk after the first. 256 hands the
    #: relay large chunks (cheap for the writer); 1 is a model's one token per chunk. A
    #: stream hands over at most 32 tokens' worth of chunks per turn of the loop (one chunk
    #: when a chunk is larger: `synthetic.UNPACED_TURN_TOKENS`).
    unpaced_chunk_tokens: int = 256


#: Provider names the router knows; `local` is any OpenAI-compatible server.
PROVIDER_NAMES = ("openai", "anthropic", "local", "synthetic")
DEFAULT_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-5",
    "local": "llama3.1",
    "synthetic": "synthetic-fountain-1",
}


#: The most output tokens a provider's cap may be set to.
MAX_OUTPUT_TOKENS_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One language-model provider: how to reach it and which model it runs by default."""

    #: One of PROVIDER_NAMES.
    name: str
    #: Default model; a stage route may name another.
    model: str
    #: API key; empty for providers that need none (synthetic, most local servers).
    #: Never in the repr, so a logged config does not show it.
    api_key: str = field(default="", repr=False)
    #: Base URL of the API; empty means the SDK's default (the vendor's public API).
    base_url: str = ""
    #: Largest completion asked of this provider's models; 0: the router's
    #: `max_output_tokens`. A small local model's context may hold less.
    max_output_tokens: int = 0
    #: Ask for usage in the stream's last chunk (`stream_options.include_usage`); off for
    #: OpenAI-compatible servers that refuse the field (the tokens are then estimated).
    include_usage: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    """One link of a stage's provider chain: a provider and the model it runs there."""

    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class StageRouting:
    """The ordered provider chain of one pipeline stage (plan or write)."""

    routes: tuple[Route, ...]

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(route.provider for route in self.routes)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Retries, circuit breakers and timeouts of the provider router."""

    #: Attempts per provider before the first token (1 = no retry).
    max_attempts: int = 3
    #: First backoff delay in seconds; doubles per attempt, with full jitter.
    backoff_seconds: float = 0.5
    #: Longest wait between attempts, Retry-After included.
    max_backoff_seconds: float = 20.0
    #: Consecutive failures that open a provider's breaker.
    breaker_failures: int = 5
    #: How long an open breaker waits before letting one trial request through.
    breaker_cooldown_seconds: float = 30.0
    #: Longest wait for a stream's first token.
    first_token_timeout_seconds: float = 30.0
    #: Longest silence between two tokens of a stream.
    idle_timeout_seconds: float = 30.0
    #: Largest completion asked of a model, in tokens.
    max_output_tokens: int = 8192


@dataclass(frozen=True, slots=True)
class ProvidersConfig:
    """Every configured provider and the chain each stage uses."""

    #: Configured providers by name; synthetic is always there.
    providers: tuple[ProviderConfig, ...] = (
        ProviderConfig("synthetic", DEFAULT_MODELS["synthetic"]),
    )
    plan: StageRouting = StageRouting((Route("synthetic", DEFAULT_MODELS["synthetic"]),))
    write: StageRouting = StageRouting((Route("synthetic", DEFAULT_MODELS["synthetic"]),))
    router: RouterConfig = field(default_factory=RouterConfig)

    def provider(self, name: str) -> ProviderConfig:
        """The configuration of provider `name` (KeyError when not configured)."""
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(name)

    @property
    def chain(self) -> tuple[str, ...]:
        """Every provider either stage may use, in chain order."""
        names: list[str] = []
        for name in (*self.plan.providers, *self.write.providers):
            if name not in names:
                names.append(name)
        return tuple(names)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything the core needs to run."""

    #: Folder for the SQLite database and other local state.
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    #: host:port the gRPC server listens on; port 0 picks a free one.
    grpc_address: str = DEFAULT_GRPC_ADDRESS
    #: host:port of the Prometheus /metrics endpoint; None turns it off.
    metrics_address: str | None = DEFAULT_METRICS_ADDRESS
    #: Project store URL: empty means SQLite in `data_dir`; `sqlite:///path` or
    #: `postgresql://user:password@host:port/database` (see server.store.factory).
    #: Not in the repr: it may carry a password.
    database_url: str = field(default="", repr=False)
    #: The synthetic provider's behaviour.
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    #: Language-model providers, stage chains, retries, breakers and timeouts.
    providers: ProvidersConfig = field(default_factory=ProvidersConfig)
    #: Readiness is NOT_SERVING while the disk of local state (SQLite, embedded Chroma)
    #: has less than this many MiB free; 0 leaves it unchecked.
    min_free_disk_mb: float = 32.0
    #: A job that produced no event for this long appends a Heartbeat.
    heartbeat_seconds: float = 10.0
    #: On SIGTERM, how long running jobs may take to finish before they are cancelled.
    shutdown_grace_seconds: float = 20.0
    #: After this long a client's connection is asked (HTTP/2 GOAWAY) to reconnect, so
    #: clients that balance over every core (the gateway's round_robin over a headless
    #: Service) find cores started since; 0: never. Its open streams carry on for up to
    #: `max_connection_age_grace_seconds` more.
    max_connection_age_seconds: float = 0.0
    max_connection_age_grace_seconds: float = 3600.0
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: How many jobs may run at once in this core; more are refused with RESOURCE_EXHAUSTED.
    max_running_jobs: int = 1000
    #: Text arriving within this window after a TextDelta joins the next one (the first
    #: chunk of a stream always goes out at once); 0 sends every model chunk as its own delta.
    #: 100 ms: ten updates a second read as smooth, and each hop pays per delta, not per token.
    delta_window_seconds: float = 0.1
    #: Worker processes that run the HTTP providers' model calls (0-16), so a burst's
    #: requests and every token's parsing leave the core's CPU; 0 runs them in the core
    #: (server.providers.worker_pool).
    provider_workers: int = 0
    #: Event streams (GenerateScript, StreamGenerationEvents) this core serves at once;
    #: more are refused at once with RESOURCE_EXHAUSTED (OVER_CAPACITY); 0: no limit.
    max_streams: int = 0
    #: Redis URL for the shared event log, job registry and coordination; empty: in memory.
    #: Not in the repr: it may carry a password (`redis://:password@host`).
    redis_url: str = field(default="", repr=False)
    #: Prefix of every Redis key Scriptgen writes.
    redis_key_prefix: str = "scriptgen:"
    #: How long Redis commands are retried while Redis is unreachable, in seconds.
    redis_retry_seconds: float = 10.0
    #: How long a job's events and record are kept after its terminal event, in seconds.
    event_retention_seconds: float = 24 * 3600.0
    #: In memory only (no Redis): at most this many finished jobs' events and records are
    #: kept; the oldest-ended go first, even before `event_retention_seconds`.
    finished_jobs_kept: int = 500
    #: A job that is not detached and nobody has followed for this long is cancelled; 0: never.
    abandon_after_seconds: float = 30.0
    #: A running job's owner lease; a job whose core is gone this long is ended by another.
    owner_lease_seconds: float = 10.0
    #: Story knowledge: Chroma (embedded or server), embedder, limits.
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    #: API keys, tenants, job tokens and per-tenant limits (server.auth.settings).
    auth: AuthConfig = field(default_factory=AuthConfig)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "scriptgen.sqlite3"


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(f"SCRIPTGEN_{name}", default)


def parse_chain(spec: str, models: Mapping[str, str]) -> tuple[Route, ...]:
    """Parse a chain such as `openai:gpt-4o-mini,anthropic` (model defaults from `models`)."""
    routes: list[Route] = []
    for entry in spec.split(","):
        name, _, model = entry.strip().partition(":")
        name = name.strip().lower()
        if not name:
            continue
        if name not in PROVIDER_NAMES:
            raise ValueError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
        if any(route.provider == name for route in routes):
            raise ValueError(f"provider {name!r} appears twice in {spec!r}")
        routes.append(Route(name, model.strip() or models.get(name, DEFAULT_MODELS[name])))
    return tuple(routes)


def build_providers(
    *,
    chain: str = "",
    plan_chain: str = "",
    write_chain: str = "",
    openai_api_key: str = "",
    openai_base_url: str = "",
    openai_model: str = DEFAULT_MODELS["openai"],
    anthropic_api_key: str = "",
    anthropic_base_url: str = "",
    anthropic_model: str = DEFAULT_MODELS["anthropic"],
    local_base_url: str = "",
    local_api_key: str = "",
    local_model: str = DEFAULT_MODELS["local"],
    local_max_output_tokens: int = 0,
    local_include_usage: bool = True,
    router: RouterConfig | None = None,
) -> ProvidersConfig:
    """Check and assemble provider settings; ValueError names what is wrong.

    An empty `chain` means every provider that is set up (OpenAI and Anthropic
    with a key, Local with a base URL) in that order, or just synthetic when
    none is. An empty stage chain means the default chain.
    """
    configured = [ProviderConfig("synthetic", DEFAULT_MODELS["synthetic"])]
    if openai_api_key:
        configured.append(ProviderConfig("openai", openai_model, openai_api_key, openai_base_url))
    if anthropic_api_key:
        configured.append(
            ProviderConfig("anthropic", anthropic_model, anthropic_api_key, anthropic_base_url)
        )
    if local_base_url:
        if not 0 <= local_max_output_tokens <= MAX_OUTPUT_TOKENS_LIMIT:
            raise ValueError(
                f"--local-max-output-tokens must be 0..{MAX_OUTPUT_TOKENS_LIMIT}"
                f" (0: --max-output-tokens), not {local_max_output_tokens}"
            )
        configured.append(
            ProviderConfig(
                "local",
                local_model,
                local_api_key or "local",
                local_base_url,
                max_output_tokens=local_max_output_tokens,
                include_usage=local_include_usage,
            )
        )
    models = {provider.name: provider.model for provider in configured}
    if not chain.strip():
        real = [p.name for p in configured if p.name != "synthetic"]
        chain = ",".join(real) or "synthetic"
    default = parse_chain(chain, models)
    stages: list[StageRouting] = []
    for stage, spec in (("plan", plan_chain), ("write", write_chain)):
        routes = parse_chain(spec, models) if spec.strip() else default
        if not routes:
            raise ValueError(f"the {stage} chain names no provider")
        for route in routes:
            if route.provider not in models:
                hint = {
                    "openai": "set OPENAI_API_KEY",
                    "anthropic": "set ANTHROPIC_API_KEY",
                    "local": "set SCRIPTGEN_LOCAL_BASE_URL",
                }[route.provider]
                raise ValueError(f"provider {route.provider!r} is not set up: {hint}")
        stages.append(StageRouting(routes))
    return ProvidersConfig(
        providers=tuple(configured),
        plan=stages[0],
        write=stages[1],
        router=router or RouterConfig(),
    )


def add_arguments(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    *,
    grpc_address: str = DEFAULT_GRPC_ADDRESS,
) -> None:
    """Declare the core's flags on `parser`, defaulting to `SCRIPTGEN_*` variables."""
    env = os.environ if environ is None else environ
    group = parser.add_argument_group("core")
    group.add_argument(
        "--data-dir",
        default=_env(env, "DATA_DIR", DEFAULT_DATA_DIR),
        help="folder for local state [SCRIPTGEN_DATA_DIR] (default: %(default)s)",
    )
    group.add_argument(
        "--grpc-address",
        default=_env(env, "GRPC_ADDRESS", grpc_address),
        help="gRPC listen address [SCRIPTGEN_GRPC_ADDRESS] (default: %(default)s)",
    )
    group.add_argument(
        "--metrics-address",
        default=_env(env, "METRICS_ADDRESS", DEFAULT_METRICS_ADDRESS),
        help="Prometheus listen address, 'off' to disable [SCRIPTGEN_METRICS_ADDRESS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--database-url",
        default=_env(env, "DATABASE_URL", ""),
        help="project store URL: postgresql://user:password@host:port/db, sqlite:///path,"
        " or empty for SQLite in the data dir [SCRIPTGEN_DATABASE_URL]",
    )
    group.add_argument(
        "--synthetic-first-token-seconds",
        type=float,
        default=_env(env, "SYNTHETIC_FIRST_TOKEN_SECONDS", "0.3"),
        help="synthetic writer: delay before the first token"
        " [SCRIPTGEN_SYNTHETIC_FIRST_TOKEN_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--synthetic-tokens-per-second",
        type=float,
        default=_env(env, "SYNTHETIC_TOKENS_PER_SECOND", "40"),
        help="synthetic writer: tokens per second, 0 for unlimited"
        " [SCRIPTGEN_SYNTHETIC_TOKENS_PER_SECOND] (default: %(default)s)",
    )
    group.add_argument(
        "--synthetic-tokens-per-chunk",
        type=int,
        default=_env(env, "SYNTHETIC_TOKENS_PER_CHUNK", "1"),
        help="synthetic writer: tokens per streamed chunk"
        " [SCRIPTGEN_SYNTHETIC_TOKENS_PER_CHUNK] (default: %(default)s)",
    )
    group.add_argument(
        "--synthetic-unpaced-chunk-tokens",
        type=int,
        default=_env(env, "SYNTHETIC_UNPACED_CHUNK_TOKENS", "256"),
        help="synthetic writer at unlimited pace: tokens per chunk after the first; 1 streams"
        " token by token like a model, 32 tokens per turn of the event loop"
        " [SCRIPTGEN_SYNTHETIC_UNPACED_CHUNK_TOKENS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--synthetic-episode-minutes",
        type=int,
        default=_env(env, "SYNTHETIC_EPISODE_MINUTES", "0"),
        help="synthetic writer: episode length when the project sets none, about three"
        " scenes a minute; 0 for a four-scene demo"
        " [SCRIPTGEN_SYNTHETIC_EPISODE_MINUTES] (default: %(default)s)",
    )
    group.add_argument(
        "--delta-window-ms",
        type=float,
        default=_env(env, "DELTA_WINDOW_MS", "100"),
        help="join model text arriving within this window into one TextDelta (the first"
        " chunk goes out at once); 0 sends one delta per chunk [SCRIPTGEN_DELTA_WINDOW_MS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--provider-workers",
        type=int,
        default=_env(env, "PROVIDER_WORKERS", "0"),
        help="worker processes for the OpenAI, Anthropic and local model calls (0-16), so they"
        " run on other CPUs than the core; 0 runs them in the core"
        " [SCRIPTGEN_PROVIDER_WORKERS] (default: %(default)s)",
    )
    group.add_argument(
        "--max-streams",
        type=int,
        default=_env(env, "MAX_STREAMS", "0"),
        help="event streams served at once; more are refused with RESOURCE_EXHAUSTED,"
        " 0 for no limit [SCRIPTGEN_MAX_STREAMS] (default: %(default)s)",
    )
    group.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=_env(env, "HEARTBEAT_SECONDS", "10"),
        help="idle time after which a job appends a Heartbeat [SCRIPTGEN_HEARTBEAT_SECONDS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=_env(env, "SHUTDOWN_GRACE_SECONDS", "20"),
        help="on SIGTERM, time running jobs get to finish [SCRIPTGEN_SHUTDOWN_GRACE_SECONDS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--max-connection-age-seconds",
        type=float,
        default=_env(env, "MAX_CONNECTION_AGE_SECONDS", "0"),
        help="ask clients to reconnect after this long, so balancing clients find new cores;"
        " 0 never [SCRIPTGEN_MAX_CONNECTION_AGE_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--max-connection-age-grace-seconds",
        type=float,
        default=_env(env, "MAX_CONNECTION_AGE_GRACE_SECONDS", "3600"),
        help="how long streams on a connection asked to reconnect may still run"
        " [SCRIPTGEN_MAX_CONNECTION_AGE_GRACE_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--min-free-disk-mb",
        type=float,
        default=_env(env, "MIN_FREE_DISK_MB", "32"),
        help="readiness turns NOT_SERVING while the disk of local state (SQLite, embedded"
        " Chroma) has less free; 0: unchecked [SCRIPTGEN_MIN_FREE_DISK_MB] (default: %(default)s)",
    )
    _add_redis_arguments(parser, env)
    _add_provider_arguments(parser, env)
    add_knowledge_arguments(parser, env)
    add_auth_arguments(parser, env)


def _add_redis_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    group = parser.add_argument_group("scaling out (Redis) and job lifetime")
    group.add_argument(
        "--redis-url",
        default=_env(env, "REDIS_URL", ""),
        help="Redis for the shared event log, job registry and coordination, e.g."
        " redis://127.0.0.1:6379/0; empty keeps them in memory [SCRIPTGEN_REDIS_URL]",
    )
    group.add_argument(
        "--redis-key-prefix",
        default=_env(env, "REDIS_KEY_PREFIX", "scriptgen:"),
        help="prefix of every Redis key [SCRIPTGEN_REDIS_KEY_PREFIX] (default: %(default)s)",
    )
    number_flags = [
        (
            "redis-retry-seconds",
            "REDIS_RETRY_SECONDS",
            "10",
            "how long to retry an unreachable Redis",
        ),
        (
            "event-retention-seconds",
            "EVENT_RETENTION_SECONDS",
            "86400",
            "how long a job's events and record stay after it ended",
        ),
        (
            "finished-jobs-kept",
            "FINISHED_JOBS_KEPT",
            "500",
            "in memory (no Redis): keep at most this many finished jobs (oldest-ended go first)",
        ),
        (
            "abandon-after-seconds",
            "ABANDON_AFTER_SECONDS",
            "30",
            "cancel a job that is not detached after this long without a reader (0: never)",
        ),
        (
            "owner-lease-seconds",
            "OWNER_LEASE_SECONDS",
            "10",
            "lease of a core on its running jobs; a job whose core is gone longer is ended",
        ),
    ]
    for flag, name, default, text in number_flags:
        group.add_argument(
            f"--{flag}",
            type=float,
            default=_env(env, name, default),
            help=f"{text} [SCRIPTGEN_{name}] (default: %(default)s)",
        )


def _add_provider_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    group = parser.add_argument_group("language-model providers")
    text_flags = [
        (
            "providers",
            "PROVIDERS",
            "",
            "default provider chain, e.g. 'openai,anthropic:MODEL';"
            " empty: every provider set up, else synthetic",
        ),
        (
            "plan-providers",
            "PLAN_PROVIDERS",
            "",
            "provider chain of the plan stage (empty: the default chain)",
        ),
        (
            "write-providers",
            "WRITE_PROVIDERS",
            "",
            "provider chain of the write stage (empty: the default chain)",
        ),
        ("openai-model", "OPENAI_MODEL", DEFAULT_MODELS["openai"], "OpenAI model"),
        ("openai-base-url", "OPENAI_BASE_URL", "", "OpenAI API base URL (empty: api.openai.com)"),
        ("anthropic-model", "ANTHROPIC_MODEL", DEFAULT_MODELS["anthropic"], "Anthropic model"),
        (
            "anthropic-base-url",
            "ANTHROPIC_BASE_URL",
            "",
            "Anthropic API base URL (empty: api.anthropic.com)",
        ),
        (
            "local-base-url",
            "LOCAL_BASE_URL",
            "",
            "base URL of an OpenAI-compatible server"
            " (Ollama: http://localhost:11434/v1); setting it enables the local provider",
        ),
        ("local-model", "LOCAL_MODEL", DEFAULT_MODELS["local"], "model of the local server"),
    ]
    for flag, name, default, text in text_flags:
        group.add_argument(
            f"--{flag}",
            default=_env(env, name, default),
            help=f"{text} [SCRIPTGEN_{name}] (default: %(default)r)",
        )
    number_flags: list[tuple[str, str, type[int] | type[float], str, str]] = [
        (
            "provider-max-attempts",
            "PROVIDER_MAX_ATTEMPTS",
            int,
            "3",
            "attempts per provider before the first token",
        ),
        (
            "provider-backoff-seconds",
            "PROVIDER_BACKOFF_SECONDS",
            float,
            "0.5",
            "first retry delay, doubled per attempt, with jitter",
        ),
        (
            "provider-max-backoff-seconds",
            "PROVIDER_MAX_BACKOFF_SECONDS",
            float,
            "20",
            "longest retry delay, Retry-After included",
        ),
        (
            "breaker-failures",
            "BREAKER_FAILURES",
            int,
            "5",
            "consecutive failures that open a provider's circuit breaker",
        ),
        (
            "breaker-cooldown-seconds",
            "BREAKER_COOLDOWN_SECONDS",
            float,
            "30",
            "time an open breaker waits before a trial request",
        ),
        (
            "first-token-timeout-seconds",
            "FIRST_TOKEN_TIMEOUT_SECONDS",
            float,
            "30",
            "longest wait for a model's first token",
        ),
        (
            "idle-timeout-seconds",
            "IDLE_TIMEOUT_SECONDS",
            float,
            "30",
            "longest silence between two tokens",
        ),
        (
            "max-output-tokens",
            "MAX_OUTPUT_TOKENS",
            int,
            "8192",
            "largest completion asked of a model",
        ),
        (
            "local-max-output-tokens",
            "LOCAL_MAX_OUTPUT_TOKENS",
            int,
            "0",
            "largest completion asked of the local server's model (0: --max-output-tokens)",
        ),
    ]
    for flag, name, kind, default, text in number_flags:
        group.add_argument(
            f"--{flag}",
            type=kind,
            default=kind(_env(env, name, default)),
            help=f"{text} [SCRIPTGEN_{name}] (default: %(default)s)",
        )
    group.add_argument(
        "--local-without-usage",
        action="store_const",
        const="1",
        default=_env(env, "LOCAL_WITHOUT_USAGE", ""),
        help="do not ask the local server for usage (stream_options), for servers that refuse"
        " it; its tokens are then estimated [SCRIPTGEN_LOCAL_WITHOUT_USAGE]",
    )
    # Keys come from the vendors' usual variables only: never a flag, so never in `ps`.
    parser.set_defaults(
        openai_api_key=env.get("OPENAI_API_KEY", ""),
        anthropic_api_key=env.get("ANTHROPIC_API_KEY", ""),
        local_api_key=_env(env, "LOCAL_API_KEY", ""),
    )


def from_arguments(namespace: argparse.Namespace) -> CoreConfig:
    """Build the config from flags parsed by a parser given `add_arguments`.

    Raises ValueError when the provider settings do not fit together or the
    database URL names no known store.
    """
    check_database_url(str(namespace.database_url))
    auth = auth_from_arguments(namespace)
    grpc_address = listen_address(
        "--grpc-address (SCRIPTGEN_GRPC_ADDRESS)", str(namespace.grpc_address)
    )
    check_disabled_auth(auth, grpc_address)
    metrics = str(namespace.metrics_address)
    return CoreConfig(
        data_dir=Path(namespace.data_dir),
        grpc_address=grpc_address,
        metrics_address=(
            None
            if metrics.lower() in {"", "off", "none"}
            else listen_address("--metrics-address (SCRIPTGEN_METRICS_ADDRESS)", metrics)
        ),
        database_url=str(namespace.database_url),
        synthetic=SyntheticConfig(
            first_token_seconds=float(namespace.synthetic_first_token_seconds),
            tokens_per_second=float(namespace.synthetic_tokens_per_second),
            tokens_per_chunk=max(1, int(namespace.synthetic_tokens_per_chunk)),
            unpaced_chunk_tokens=max(1, int(namespace.synthetic_unpaced_chunk_tokens)),
            min_wake_seconds=max(0.0, float(namespace.delta_window_ms) / 1000.0),
            episode_minutes=max(0, int(namespace.synthetic_episode_minutes)),
        ),
        delta_window_seconds=max(0.0, float(namespace.delta_window_ms) / 1000.0),
        provider_workers=_provider_workers(int(namespace.provider_workers)),
        max_streams=max(0, int(namespace.max_streams)),
        heartbeat_seconds=float(namespace.heartbeat_seconds),
        shutdown_grace_seconds=float(namespace.shutdown_grace_seconds),
        max_connection_age_seconds=max(0.0, float(namespace.max_connection_age_seconds)),
        max_connection_age_grace_seconds=max(
            0.0, float(namespace.max_connection_age_grace_seconds)
        ),
        min_free_disk_mb=max(0.0, float(namespace.min_free_disk_mb)),
        redis_url=_redis_url(str(namespace.redis_url)),
        redis_key_prefix=str(namespace.redis_key_prefix),
        redis_retry_seconds=float(namespace.redis_retry_seconds),
        event_retention_seconds=float(namespace.event_retention_seconds),
        finished_jobs_kept=max(1, int(namespace.finished_jobs_kept)),
        abandon_after_seconds=float(namespace.abandon_after_seconds),
        owner_lease_seconds=float(namespace.owner_lease_seconds),
        providers=_providers_from(namespace),
        knowledge=knowledge_from_arguments(namespace),
        auth=auth,
    )


#: URL schemes redis-py connects with.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(url: str) -> str:
    if url and not url.lower().startswith(REDIS_SCHEMES):
        raise ValueError(
            "--redis-url (SCRIPTGEN_REDIS_URL) must start with redis://, rediss:// or unix://"
            " (e.g. redis://127.0.0.1:6379/0)"
        )
    return url


def _provider_workers(count: int) -> int:
    if not 0 <= count <= MAX_PROVIDER_WORKERS:
        raise ValueError(f"--provider-workers must be 0-{MAX_PROVIDER_WORKERS}, not {count}")
    return count


def _providers_from(namespace: argparse.Namespace) -> ProvidersConfig:
    router = RouterConfig(
        max_attempts=max(1, int(namespace.provider_max_attempts)),
        backoff_seconds=float(namespace.provider_backoff_seconds),
        max_backoff_seconds=float(namespace.provider_max_backoff_seconds),
        breaker_failures=max(1, int(namespace.breaker_failures)),
        breaker_cooldown_seconds=float(namespace.breaker_cooldown_seconds),
        first_token_timeout_seconds=float(namespace.first_token_timeout_seconds),
        idle_timeout_seconds=float(namespace.idle_timeout_seconds),
        max_output_tokens=int(namespace.max_output_tokens),
    )
    return build_providers(
        chain=str(namespace.providers),
        plan_chain=str(namespace.plan_providers),
        write_chain=str(namespace.write_providers),
        openai_api_key=str(namespace.openai_api_key),
        openai_base_url=str(namespace.openai_base_url),
        openai_model=str(namespace.openai_model),
        anthropic_api_key=str(namespace.anthropic_api_key),
        anthropic_base_url=str(namespace.anthropic_base_url),
        anthropic_model=str(namespace.anthropic_model),
        local_base_url=str(namespace.local_base_url),
        local_api_key=str(namespace.local_api_key),
        local_model=str(namespace.local_model),
        local_max_output_tokens=int(namespace.local_max_output_tokens),
        local_include_usage=not parse_switch(
            "SCRIPTGEN_LOCAL_WITHOUT_USAGE", str(namespace.local_without_usage)
        ),
        router=router,
    )
