"""Client settings: frozen dataclasses built once by the caller and passed to `Client`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a broken call is tried again.

    Applies to UNAVAILABLE (and RESOURCE_EXHAUSTED `RATE_LIMITED`) on idempotent
    unary calls and to resuming event streams. Delays grow exponentially from
    `initial_backoff` up to `max_backoff`; each is spread by +/- `jitter` (a
    fraction) so that many clients cut off by one outage do not reconnect in
    lockstep. When the server says how long to wait (a RetryInfo), the wait is
    the longer of the two; a server asking for more than `max_retry_delay` ends
    the retries at once.
    """

    #: Tries in a row without progress before giving up, the first one included.
    max_attempts: int = 6
    #: Delay before the second try, in seconds.
    initial_backoff: float = 0.1
    #: Upper bound of any one delay, in seconds.
    max_backoff: float = 5.0
    #: Growth of the delay from one try to the next.
    multiplier: float = 2.0
    #: Random spread of each delay, as a fraction of it (0 turns jitter off).
    jitter: float = 0.2
    #: Longest wait a server's RetryInfo may ask for, in seconds; beyond it, no retry.
    max_retry_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within 0..1")
        if self.max_retry_delay < 0:
            raise ValueError("max_retry_delay must not be negative")

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed try in a row (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, failures - 1))
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))

    def retry_delay(self, failures: int, requested: timedelta | None = None) -> float | None:
        """Seconds to wait after the `failures`-th failed try, or None for no retry.

        `requested` is the server's RetryInfo delay: the wait is at least that
        long, and None when it is longer than `max_retry_delay`.
        """
        backoff = self.backoff(failures)
        if requested is None:
            return backoff
        seconds = requested.total_seconds()
        if seconds > self.max_retry_delay:
            return None
        return max(backoff, seconds)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a `Client` needs besides its target's own settings."""

    #: host:port (or any gRPC target string) of the core.
    target: str = DEFAULT_TARGET
    #: Deadline of each unary call in seconds, unless the call names its own.
    deadline: float = 10.0
    #: An event stream silent for this long is taken as a dead link and resumed.
    #: The core sends heartbeats to idle streams (every 10 s by default), so
    #: this must comfortably exceed the core's heartbeat interval.
    stream_idle_timeout: float = 30.0
    #: Retries of idempotent calls (UNAVAILABLE, RATE_LIMITED) and stream resumption.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Metadata sent with every call, e.g. `(("x-feature-flags", "polish"),)`.
    metadata: tuple[tuple[str, str], ...] = ()
    #: API key (`sg_…`), sent as `authorization: Bearer <key>` with every call;
    #: empty: the `SCRIPTGEN_API_KEY` environment variable, if set.
    api_key: str = field(default="", repr=False)
    #: Largest gRPC message sent or received, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Longest wait between reconnection attempts of the channel, in seconds;
    #: kept short so a resumed stream is not held back by gRPC's own 120 s default.
    max_reconnect_backoff: float = 2.0
    #: Connect with TLS (`grpc.aio.secure_channel`); False: plaintext.
    tls: bool = False
    #: PEM root certificates that sign the core's certificate (only with `tls`);
    #: None: the system's roots.
    root_certificates: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.deadline <= 0:
            raise ValueError("deadline must be positive")
        if self.stream_idle_timeout <= 0:
            raise ValueError("stream_idle_timeout must be positive")
        if self.max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        if self.root_certificates is not None and not self.tls:
            raise ValueError("root_certificates must come with tls=True")
        if self.root_certificates is not None and not isinstance(self.root_certificates, bytes):
            raise ValueError("root_certificates must be PEM bytes, e.g. Path(...).read_bytes()")
        if self.api_key and not (
            self.api_key.isprintable() and self.api_key.strip() == self.api_key
        ):
            # A header cannot carry it; said here, not at the first call.
            raise ValueError("api_key must be printable, without surrounding whitespace")

    def channel_options(self) -> list[tuple[str, int]]:
        """gRPC channel arguments derived from this config."""
        reconnect_ms = max(100, int(self.max_reconnect_backoff * 1000))
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", min(100, reconnect_ms)),
            ("grpc.min_reconnect_backoff_ms", min(100, reconnect_ms)),
            ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ]
