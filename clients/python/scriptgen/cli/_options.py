"""Flags shared by the client commands, each defaulting to a `SCRIPTGEN_*` variable."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from scriptgen._client import Client
from scriptgen._config import DEFAULT_TARGET, ClientConfig

#: What a command runs once its flags are parsed; returns the exit status.
Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

_TRUE = {"1", "true", "yes", "on"}
#: Where `scriptgen serve` saves its local key in the data dir (server.auth.local_key).
LOCAL_KEY_FILE = "local-api-key"


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """Whether `SCRIPTGEN_{name}` is set to a true value."""
    return environ.get(f"SCRIPTGEN_{name}", "").strip().lower() in _TRUE


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    """`SCRIPTGEN_{name}` as a number, or `default` when unset."""
    raw = environ.get(f"SCRIPTGEN_{name}", "").strip()
    return float(raw) if raw else default


def client_parent(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """A parent parser with --target, --deadline and --json for every client command."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=environ.get("SCRIPTGEN_CORE_TARGET", DEFAULT_TARGET),
        help="gRPC address of the core [SCRIPTGEN_CORE_TARGET] (default: %(default)s)",
    )
    group.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        default=env_float(environ, "DEADLINE", 10.0),
        help="deadline of each call [SCRIPTGEN_DEADLINE] (default: %(default)s)",
    )
    group.add_argument(
        "--api-key",
        default=environ.get("SCRIPTGEN_API_KEY", ""),
        help="API key (sg_…); prefer SCRIPTGEN_API_KEY, which `ps` does not show. Without one,"
        " the key `scriptgen serve` saved in SCRIPTGEN_DATA_DIR (scriptgen-data) is used",
    )
    group.add_argument(
        "--data-dir",
        default=environ.get("SCRIPTGEN_DATA_DIR", "scriptgen-data"),
        help=argparse.SUPPRESS,
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=env_flag(environ, "JSON"),
        help="machine-readable output: proto3 JSON [SCRIPTGEN_JSON=1]",
    )
    return parent


def api_key(args: argparse.Namespace) -> str:
    """--api-key / SCRIPTGEN_API_KEY, else the local key `scriptgen serve` saved, else none."""
    given = str(getattr(args, "api_key", "") or "")
    if given:
        return given
    path = Path(str(getattr(args, "data_dir", "scriptgen-data"))) / LOCAL_KEY_FILE
    try:
        saved = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return saved if saved.startswith("sg_") else ""


def connect(args: argparse.Namespace) -> Client:
    """A client for the core named by the parsed flags."""
    return Client(
        str(args.target), ClientConfig(deadline=float(args.deadline), api_key=api_key(args))
    )


def set_command(parser: argparse.ArgumentParser, command: Command) -> None:
    """Make `parser` run `command` when chosen."""
    parser.set_defaults(command=command)


class ConfigurationError(Exception):
    """Flags or SCRIPTGEN_* variables that cannot work together; exit status 2."""
