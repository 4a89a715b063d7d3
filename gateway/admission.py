"""Admission control for SSE streams: beyond this process's limit a new stream gets 429 at once.

Past its capacity a gateway that takes every stream makes all of them late;
refusing the one over the limit before any call to the core, with 429 and
`Retry-After` (RESOURCE_EXHAUSTED, reason OVER_CAPACITY), keeps admitted
streams on time and lets the client retry shortly or elsewhere. The limit is
per process (`--gateway-max-streams`); 0 admits all.

It is not a rate limit: the refusal carries `Retry-After` but no
`X-RateLimit-*`, which describe the key's request window at the core — a
window this refused request, which never reached the core, did not touch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from aiohttp import web
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2

from gateway.errors import ApiError, Reason

#: What a refused client is told to wait (`Retry-After`), in seconds.
RETRY_AFTER_SECONDS = 1


class StreamSlots:
    """Counts this process's open SSE streams against `limit` (0: unlimited)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = max(0, limit)
        self.open = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the `with` body; ApiError (429) when every slot is taken."""
        if self.limit and self.open >= self.limit:
            raise over_capacity(self.limit)
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


def over_capacity(limit: int) -> ApiError:
    """The refusal of a stream beyond `limit`, with its RetryInfo."""
    error = ApiError.gateway(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.OVER_CAPACITY,
        f"This gateway serves its maximum of {limit} event streams; retry shortly.",
    )
    retry = any_pb2.Any()
    retry.Pack(
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_SECONDS))
    )
    error.details.append(retry)
    return error


#: The app's stream slots; an app without them admits every stream.
SLOTS = web.AppKey("stream_slots", StreamSlots)
