"""What one stream saw, kept compact so worker processes can send thousands back."""

from __future__ import annotations

import enum
from array import array
from dataclasses import dataclass, field


class Outcome(enum.Enum):
    """How a stream ended."""

    COMPLETED = "completed"  # the job's `completed` event arrived
    FAILED = "failed"  # the job's (or the gateway's) `failed` event arrived
    CANCELLED = "cancelled"  # the job's `cancelled` event arrived
    ERROR = "error"  # the request or the connection failed
    CUT = "cut"  # still open at the duration cap (or at the end of a hold): not an error


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """One stream to run: its number, project and start, in seconds after the common start."""

    index: int
    project: str
    start_offset: float


@dataclass(slots=True)
class StreamRecord:
    """The timeline of one stream, in `time.monotonic()` seconds (shared by every process)."""

    index: int
    project: str
    #: When the load tool began the stream; None when it never started.
    began: float | None = None
    #: When the request went out: its body handed to the connection (SSE), the call made
    #: (gRPC). Latencies count from here; the load tool's own work before it, which a
    #: burst queues in the tool's one loop, is `began` to `sent`.
    sent: float | None = None
    #: The stream's TCP connection (SSE): begun and established. Outside the latencies,
    #: so it is reported on its own: an accept queue that overflows shows here (~1 s).
    connecting: float | None = None
    connected: float | None = None
    #: When the response headers arrived (SSE only).
    headers: float | None = None
    #: When the first event arrived: any job event, before `retry:`/pings do not count.
    first_event: float | None = None
    #: When the first TextDelta arrived.
    first_token: float | None = None
    #: When the write stage's `stage` event arrived: the model call whose text is streamed.
    write_started: float | None = None
    ended: float | None = None
    outcome: Outcome = Outcome.ERROR
    #: Kind of error for ERROR/FAILED outcomes, e.g. `http 503`, `failed RESOURCE_EXHAUSTED`.
    error: str = ""
    events: int = 0
    heartbeats: int = 0
    tokens: int = 0
    #: Tokens of the saved episode's script, from the `completed` event.
    episode_tokens: int | None = None
    episode: str = ""
    #: Arrival time and token count of every TextDelta.
    delta_times: array[float] = field(default_factory=lambda: array("d"))
    delta_tokens: array[int] = field(default_factory=lambda: array("I"))


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """What one client process sends back."""

    pid: int
    records: list[StreamRecord]
    #: CPU seconds (user + system) the process spent, its peak RSS in bytes.
    cpu_seconds: float
    max_rss_bytes: int
