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

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
DEFAULT_DATA_DIR = "scriptgen-data"


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """The offline, deterministic writer used when no LLM provider is configured."""

    #: Delay before the first token of each stage, in seconds.
    first_token_seconds: float = 0.3
    #: Tokens written per second; 0 writes as fast as the event loop allows.
    tokens_per_second: float = 40.0
    #: Tokens per emitted chunk (a chunk becomes one TextDelta).
    tokens_per_chunk: int = 1


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything the core needs to run."""

    #: Folder for the SQLite database and other local state.
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    #: host:port the gRPC server listens on; port 0 picks a free one.
    grpc_address: str = DEFAULT_GRPC_ADDRESS
    #: host:port of the Prometheus /metrics endpoint; None turns it off.
    metrics_address: str | None = DEFAULT_METRICS_ADDRESS
    #: Project store URL; empty means SQLite in `data_dir`.
    database_url: str = ""
    #: The synthetic provider's behaviour.
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    #: A job that produced no event for this long appends a Heartbeat.
    heartbeat_seconds: float = 10.0
    #: On SIGTERM, how long running jobs may take to finish before they are cancelled.
    shutdown_grace_seconds: float = 20.0
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: How many jobs may run at once in this core; more are refused with RESOURCE_EXHAUSTED.
    max_running_jobs: int = 1000

    @property
    def database_path(self) -> Path:
        return self.data_dir / "scriptgen.sqlite3"


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(f"SCRIPTGEN_{name}", default)


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
        help="project store URL; empty means SQLite in the data dir [SCRIPTGEN_DATABASE_URL]",
    )
    group.add_argument(
        "--synthetic-first-token-seconds",
        type=float,
        default=float(_env(env, "SYNTHETIC_FIRST_TOKEN_SECONDS", "0.3")),
        help="synthetic writer: delay before the first token"
        " [SCRIPTGEN_SYNTHETIC_FIRST_TOKEN_SECONDS] (default: %(default)s)",
    )
    group.add_argument(
        "--synthetic-tokens-per-second",
        type=float,
        default=float(_env(env, "SYNTHETIC_TOKENS_PER_SECOND", "40")),
        help="synthetic writer: tokens per second, 0 for unlimited"
        " [SCRIPTGEN_SYNTHETIC_TOKENS_PER_SECOND] (default: %(default)s)",
    )
    group.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(_env(env, "HEARTBEAT_SECONDS", "10")),
        help="idle time after which a job appends a Heartbeat [SCRIPTGEN_HEARTBEAT_SECONDS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=float(_env(env, "SHUTDOWN_GRACE_SECONDS", "20")),
        help="on SIGTERM, time running jobs get to finish [SCRIPTGEN_SHUTDOWN_GRACE_SECONDS]"
        " (default: %(default)s)",
    )


def from_arguments(namespace: argparse.Namespace) -> CoreConfig:
    """Build the config from flags parsed by a parser given `add_arguments`."""
    metrics = str(namespace.metrics_address)
    return CoreConfig(
        data_dir=Path(namespace.data_dir),
        grpc_address=str(namespace.grpc_address),
        metrics_address=None if metrics.lower() in {"", "off", "none"} else metrics,
        database_url=str(namespace.database_url),
        synthetic=SyntheticConfig(
            first_token_seconds=float(namespace.synthetic_first_token_seconds),
            tokens_per_second=float(namespace.synthetic_tokens_per_second),
        ),
        heartbeat_seconds=float(namespace.heartbeat_seconds),
        shutdown_grace_seconds=float(namespace.shutdown_grace_seconds),
    )
