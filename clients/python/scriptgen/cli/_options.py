"""Flags shared by the client commands, each defaulting to a `SCRIPTGEN_*` variable."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from scriptgen._client import Client
from scriptgen._config import DEFAULT_TARGET, ClientConfig
from scriptgen._switches import parse_switch
from scriptgen.cli._args import deadline_seconds

#: What a command runs once its flags are parsed; returns the exit status.
Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: Where `scriptgen serve` saves its local key in the data dir (server.auth.local_key).
LOCAL_KEY_FILE = "local-api-key"


def switch_value(variable: str) -> Callable[[str], bool]:
    """The parser of `variable`'s value as a switch: 1/true/yes/on or 0/false/no/off in any
    case, empty for off; anything else is an error that names the variable."""

    def parse(text: str) -> bool:
        try:
            return parse_switch(variable, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


class EnvSwitch(argparse.Action):
    """A flag without a value (as `store_true`) whose default is a `SCRIPTGEN_*` variable.

    The default is the variable's text, which argparse parses with `switch_value` once the
    command line is read: a value that is not a switch (`SCRIPTGEN_JSON=ture`) is a usage
    error naming the flag and the variable (exit status 2), where `in ("1", "true")` took
    it for off without a word.
    """

    def __init__(
        self,
        option_strings: list[str],
        dest: str,
        *,
        variable: str,
        environ: Mapping[str, str],
        help: str | None = None,
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=environ.get(variable, ""),
            type=switch_value(variable),
            help=help,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, True)


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
        type=deadline_seconds,
        metavar="SECONDS",
        # Text, so argparse says which flag a bad SCRIPTGEN_DEADLINE belongs to.
        default=(environ.get("SCRIPTGEN_DEADLINE") or "").strip() or "10",
        help="deadline of each call, more than 0 and at most 86400 [SCRIPTGEN_DEADLINE]"
        " (default: %(default)s)",
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
        action=EnvSwitch,
        variable="SCRIPTGEN_JSON",
        environ=environ,
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
