"""Structured logs: one JSON object per line, each naming its request id and generation.

Every process (`scriptgen server|gateway|serve`) calls `configure` once at start. The
request id travels in a context variable: the core sets it per gRPC call from the
`x-request-id` metadata the gateway sends (or a new one), and the job task a
GenerateScript call starts inherits it, so a job's lines carry the id of the request that
started it. The generation name comes from the record (`extra={"generation": ...}`),
from the context, or — for the job runner's lines, which name their job first, as in
`log.info("%s: %s", "generations/g…", "succeeded")` — from the record's first argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson
from google.protobuf.message import Message

#: The id of the request being served (empty outside one).
REQUEST_ID: ContextVar[str] = ContextVar("scriptgen_request_id", default="")
#: The generation the current work is about (empty when none).
GENERATION: ContextVar[str] = ContextVar("scriptgen_generation", default="")

FORMATS = ("json", "text")
_REQUEST_ID_KEY = "x-request-id"
_GENERATION_PREFIX = "generations/"
#: Attributes every LogRecord has; anything else on a record is an `extra` field.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

_HANDLER_NAME = "scriptgen"
#: The format and level `configure` set last, for the processes a server starts.
_settings = ("json", "INFO")

call_log = logging.getLogger("scriptgen.core.calls")
#: Libraries whose INFO lines are per request; only their warnings and errors are written.
QUIET_LIBRARY_LOGGERS = ("httpx2", "httpcore2", "httpx", "httpcore")


def _generation_argument(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0] if args[0].startswith(_GENERATION_PREFIX) else ""
    return ""


#: Secrets in any log text, each replaced by `[redacted]` (a URL keeps its user name).
_SECRETS = re.compile(
    "|".join(
        [
            # Scriptgen API keys (sg_k…_…) and job tokens (sgjt.….…), whole or cut short.
            r"\bsg_[A-Za-z0-9_]{8,}",
            r"\bsgjt\.[A-Za-z0-9_.-]+",
            # OpenAI (sk-…, sk-proj-…) and Anthropic (sk-ant-…) API keys.
            r"\bsk-[A-Za-z0-9_-]{8,}",
            # Credentials of an Authorization header or metadata, whatever their scheme.
            r"(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]+",
            r"\bBasic\s+[A-Za-z0-9+/=]{8,}",
            r"(?i:authorization)(?P<auth_sep>['\"]?\s*[:=,]\s*['\"]?)"
            r"(?!\[redacted\])(?!(?i:bearer|basic)\s)[^\s'\",;)}\]]+",
            # name=value and "name": "value" of keys, passwords, secrets and tokens.
            r"(?i:api[_-]?key|password|passwd|secret|access_token|refresh_token)"
            r"(?P<pair_sep>['\"]?\s*[:=]\s*['\"]?)"
            r"(?!\[redacted\])[^\s'\"&,;)}\]]+",
            # The password of a URL: redis://:password@host, postgresql://user:password@host.
            r"(?P<url_user>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/@]+@",
        ]
    )
)


def _replace(match: re.Match[str]) -> str:
    if match.group("url_user") is not None:
        return f"{match.group('url_user')}:[redacted]@"
    text = match.group(0)
    for separator in ("auth_sep", "pair_sep"):
        found = match.group(separator)
        if found is not None:
            return text[: match.end(separator) - match.start()] + "[redacted]"
    if text[:1] in "bB" and " " in text:  # `Bearer xyz`: keep the scheme
        return text.split(None, 1)[0] + " [redacted]"
    return "[redacted]"


#: Every match of `_SECRETS` holds one of these, in lower case: a scan for them is a few
#: substring searches, where the pattern's alternatives are tried at every position (~6 µs
#: for a request id). Only ASCII text is skipped by it: under IGNORECASE a few non-ASCII
#: letters match ASCII ones (the long s, U+017F, matches `s`), which `lower()` does not give.
_SECRET_MARKS = (
    "sg_",
    "sgjt.",
    "sk-",
    "bearer",
    "basic",
    "authorization",
    "api",  # api_key, api-key, apikey
    "passw",  # password, passwd
    "secret",
    "_token",  # access_token, refresh_token
    "://",
)
#: The marks as one search of the lower-cased text (~0.4 µs, against ~0.7 µs for the 11).
_SECRET_MARK = re.compile("|".join(re.escape(mark) for mark in _SECRET_MARKS))


def redact(text: str) -> str:
    """`text` with API keys, job tokens, provider keys, credentials and URL passwords
    replaced by `[redacted]`."""
    if text.isascii() and _SECRET_MARK.search(text.lower()) is None:
        return text
    return _SECRETS.sub(_replace, text)


_PLAIN = (str, int, float, bool, type(None))


class RedactingFilter(logging.Filter):
    """Takes secrets out of every record before any handler writes it: the message, its
    extra fields, and the text of its exception and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in list(vars(record).items()):
            if key in _RECORD_ATTRIBUTES:
                continue
            if isinstance(value, str):
                setattr(record, key, redact(value))
            elif not isinstance(value, _PLAIN):
                text = str(value)
                if redact(text) != text:
                    setattr(record, key, redact(text))
        if record.exc_info and record.exc_info[0] is not None:
            # Formatters write exc_text when set, so the traceback is formatted here once,
            # scrubbed, and kept; exc_info stays for handlers that want the exception.
            record.exc_text = redact(
                record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            )
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


#: The plain types themselves, without their subclasses.
_EXACTLY_PLAIN = frozenset(_PLAIN)


def _orjson_writes_as_json_does(value: object) -> bool:
    """Whether orjson writes `value` as `json.dumps(default=str)` does: exactly one of the
    plain types, a float only when finite. Anything else takes `json.dumps`: orjson writes an
    Enum by its value (`str()`, which the redacting filter checked, names the member) and a
    dataclass by its fields (its repr hides configuration secrets), and a float or tuple
    subclass by `str()`."""
    if type(value) not in _EXACTLY_PLAIN:
        return False
    return not isinstance(value, float) or math.isfinite(value)


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, ids, extra fields.

    A line of plain values (every line the servers write) is encoded by orjson (~0.4 µs,
    against ~6.5 µs for `json.dumps`); any other line, or one orjson refuses (an integer
    beyond 64 bits), by `json.dumps` as before, both without spaces between items.
    """

    def __init__(self) -> None:
        super().__init__()
        #: The last whole second written and its ISO 8601 text (one tuple, read once).
        epoch = datetime.fromtimestamp(0, UTC)
        self._second = (epoch, epoch.isoformat()[:19])

    def _time(self, created: float) -> str:
        """`created` as `isoformat(timespec="milliseconds")` of UTC gives it (~1 µs, not ~2.6)."""
        moment = datetime.fromtimestamp(created, UTC)
        second = moment.replace(microsecond=0)
        cached = self._second
        if second != cached[0]:
            cached = self._second = (second, second.isoformat()[:19])
        return f"{cached[1]}.{moment.microsecond // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "") or REQUEST_ID.get()
        generation = (
            getattr(record, "generation", "") or GENERATION.get() or _generation_argument(record)
        )
        if request_id:
            entry["request_id"] = request_id
        if generation:
            entry["generation"] = generation
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_text:  # the redacting filter leaves the scrubbed traceback here
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = record.stack_info
        if all(map(_orjson_writes_as_json_does, entry.values())):
            try:
                return orjson.dumps(entry).decode()
            except orjson.JSONEncodeError:
                pass
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at each record (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        # Not `setStream`, which flushes the stream before: a test runner's capture may be
        # closed by now. `handle` holds the handler's lock around `emit`.
        if self.stream is not sys.stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure(log_format: str = "json", level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (stderr) in `log_format`, from `level` up.

    Calling it again replaces the handler it installed before, and only that one.
    """
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; known: {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactingFilter())
    global _settings
    _settings = (log_format, level.upper())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No line names its thread or process, or the file and line of its call: these are not
    # looked up for every record (the logging HOWTO's "Optimization" section; without a
    # source file, `stack_info=True` gives no stack, which no call here asks for).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # A library logger's own level decides what reaches the handler (the root's level does
    # not filter what propagates up to it): never below the root's.
    warnings_up = max(logging.WARNING, root.level)
    # The gateway writes its own access line per request (gateway/access_log.py).
    logging.getLogger("aiohttp.access").setLevel(warnings_up)
    # The SDKs' HTTP client logs every model request at INFO ("HTTP Request: POST …"): a
    # line per job on the hot path of a burst, which the provider metrics already count.
    # At --log-level=debug they are written with everything else.
    library_level = logging.NOTSET if root.level <= logging.DEBUG else warnings_up
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def settings() -> tuple[str, str]:
    """The log format and level `configure` set last (json, INFO before it ran)."""
    return _settings


def add_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Declare --log-format and --log-level, defaulting to `SCRIPTGEN_LOG_*` variables."""
    env = os.environ if environ is None else environ
    group = parser.add_argument_group("logs")
    group.add_argument(
        "--log-format",
        choices=FORMATS,
        default=env.get("SCRIPTGEN_LOG_FORMAT", "json"),
        help="one JSON object per line, or plain text [SCRIPTGEN_LOG_FORMAT]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--log-level",
        default=env.get("SCRIPTGEN_LOG_LEVEL", "INFO"),
        help="lowest level logged [SCRIPTGEN_LOG_LEVEL] (default: %(default)s)",
    )


def bind_request(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """Make the call's `x-request-id` (or a new id) the current request id; return it."""
    request_id = ""
    for key, value in metadata or ():
        if key == _REQUEST_ID_KEY and isinstance(value, str):
            request_id = value[:128]
    request_id = request_id or uuid.uuid4().hex
    REQUEST_ID.set(request_id)
    return request_id


def generation_of(message: object) -> str:
    """The generation a request or response names (`name`, `generation`, `event.generation`)."""
    fields = _NAMING_FIELDS.get(type(message))
    if fields is None:
        # Which of the fields a message type has is found once per type (a missing
        # attribute's lookup raises, and every call of every method asks); other objects
        # are looked at whole each time.
        fields = tuple(path for path in _NAMING_PATHS if _has_path(message, path))
        if isinstance(message, Message):
            _NAMING_FIELDS[type(message)] = fields
    for path in fields:
        candidate: object = message
        for attribute in path:
            candidate = getattr(candidate, attribute, "")
        if isinstance(candidate, str) and candidate.startswith(_GENERATION_PREFIX):
            return candidate
    return ""


#: Where a message may name its generation, in the order looked at.
_NAMING_PATHS: Final = (("name",), ("generation",), ("event", "generation"))
_NAMING_FIELDS: dict[type, tuple[tuple[str, ...], ...]] = {}


def _has_path(message: object, path: tuple[str, ...]) -> bool:
    for attribute in path:
        if not hasattr(message, attribute):
            return False
        message = getattr(message, attribute)
    return True


def log_call(method: str, code: str, started: float, generation: str = "") -> None:
    """The one line of a finished gRPC call."""
    call_log.info(
        "%s %s",
        method,
        code,
        extra={
            "method": method,
            "code": code,
            "duration_seconds": round(time.monotonic() - started, 6),
            "generation": generation or GENERATION.get(),
        },
    )
