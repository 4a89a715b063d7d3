"""How the CLI writes: tables and text for people, proto3 JSON for programs, errors as one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from scriptgen._errors import RPCError, ScriptgenError
from scriptgen.cli._options import ConfigurationError

PROGRAM = "scriptgen"


def out(text: str = "", *, end: str = "\n") -> None:
    """Write to stdout now (people watch scripts being written)."""
    sys.stdout.write(text + end)
    sys.stdout.flush()


def note(text: str) -> None:
    """A line for people on stderr: progress, stages, notices."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def as_json(message: Message) -> dict[str, object]:
    """A message in the proto3 JSON mapping (camelCase)."""
    return json_format.MessageToDict(message)


def print_json(value: Message | dict[str, object]) -> None:
    """One JSON document on stdout."""
    document = as_json(value) if isinstance(value, Message) else value
    out(json.dumps(document, indent=2, ensure_ascii=False))


def print_json_line(message: Message) -> None:
    """One JSON document on one stdout line, for streams of events."""
    out(json.dumps(as_json(message), ensure_ascii=False, separators=(",", ":")))


def print_json_list(key: str, messages: Iterable[Message]) -> None:
    """A list of messages as `{key: [...]}`, like a List response without paging."""
    print_json({key: [as_json(message) for message in messages]})


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns; the last one is not padded."""
    widths = [len(title) for title in header]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], len(cell))
    for row in [header, *rows]:
        cells = [cell.ljust(widths[column]) for column, cell in enumerate(row[:-1])]
        out("  ".join([*cells, row[-1]]).rstrip())


def timestamp(value: timestamp_pb2.Timestamp) -> str:
    """An RFC 3339 time to the second, or "-" when unset."""
    if not value.seconds and not value.nanos:
        return "-"
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_line(error: BaseException, *, target: str = "") -> str:
    """One line that says what went wrong: code, message, reason, field violations."""
    if isinstance(error, RPCError):
        line = error.describe()
        if error.code.name == "UNAVAILABLE" and target:
            line += f" (is the core running at {target}?)"
        return line
    if isinstance(error, ScriptgenError):
        return str(error)
    if isinstance(error, ConfigurationError):
        return f"invalid configuration: {error}"
    return f"{type(error).__name__}: {error}"


def print_error(error: BaseException, *, target: str = "") -> None:
    """The error line on stderr, prefixed with the program name."""
    note(f"{PROGRAM}: error: {error_line(error, target=target)}")
