"""Provider failures: one exception type, classified so the router knows what to do next.

| kind                 | retryable | from                                              |
|----------------------|-----------|---------------------------------------------------|
| rate_limited         | yes       | HTTP 429 (Retry-After honoured)                   |
| server_error         | yes       | HTTP 5xx, 408, 409, Anthropic `overloaded_error`  |
| timeout              | yes       | the SDK's HTTP timeout                            |
| connection           | yes       | refused, reset or cut connections                 |
| worker_lost          | yes       | the call's provider worker exited (core)          |
| malformed            | yes       | a chunk the SDK cannot parse                      |
| first_token_timeout  | yes       | no token within the first-token timeout (router)  |
| idle_timeout         | yes       | silence between tokens too long (router)          |
| deadline             | no        | the caller's deadline passed (router)             |
| bad_request          | no        | other 4xx: 400, 404, 413, 422 …                   |
| auth                 | no        | 401, 403                                          |

`worker_lost` is the core's own failure, not the provider's: the router calls the same
provider again at once, from the text already delivered, without charging its breaker
(`server.providers.router`).
"""

from __future__ import annotations

import email.utils
import json
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import pydantic

if TYPE_CHECKING:
    import openai

#: The SDKs whose exceptions `classify` knows. It looks only at those this process has
#: imported (an exception can only come from one of them), so that a core or a provider
#: worker loads just the SDKs its providers use: `anthropic` alone is ~3,700 modules.
_SDKS = ("openai", "anthropic")

RETRYABLE_KINDS = frozenset(
    {
        "rate_limited",
        "server_error",
        "timeout",
        "connection",
        "worker_lost",
        "malformed",
        "first_token_timeout",
        "idle_timeout",
    }
)


#: A provider worker exited with the call in it (`server.providers.worker_pool`).
WORKER_LOST = "worker_lost"


class ProviderFailure(Exception):
    """A provider call failed; `kind` says how, `retry_after` what the provider asked."""

    def __init__(
        self, provider: str, kind: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{provider}: {kind}: {message}")
        self.provider = provider
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether trying the same provider again may help."""
        return self.kind in RETRYABLE_KINDS


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a response asks the caller to wait (`retry-after-ms` or `Retry-After`)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_kind(status: int) -> str:
    if status < 400:
        return "server_error"  # an error event inside a stream that began 200 OK
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status >= 500 or status in (408, 409):
        return "server_error"
    return "bad_request"


def _sdk_classes(name: str) -> tuple[type[Exception], ...]:
    """The exception class `name` of each SDK in `_SDKS` that this process imported."""
    found = (getattr(sys.modules.get(sdk), name, None) for sdk in _SDKS)
    return tuple(value for value in found if isinstance(value, type))


def classify(provider: str, error: Exception) -> ProviderFailure:
    """Translate an SDK exception (OpenAI or Anthropic) into a ProviderFailure."""
    if isinstance(error, ProviderFailure):
        return error
    if isinstance(error, _sdk_classes("APIStatusError")):
        # Both SDKs' status errors have the same shape; typed as OpenAI's.
        status = cast("openai.APIStatusError", error)
        return ProviderFailure(
            provider,
            _status_kind(status.status_code),
            f"HTTP {status.status_code}",
            retry_after=retry_after(status.response.headers),
        )
    if isinstance(error, _sdk_classes("APITimeoutError")):
        return ProviderFailure(provider, "timeout", "the HTTP request timed out")
    if isinstance(error, _sdk_classes("APIConnectionError")):
        return ProviderFailure(provider, "connection", "the connection failed")
    if isinstance(error, _sdk_classes("APIError")):
        # An `error` event inside a stream, e.g. Anthropic's overloaded_error.
        return ProviderFailure(provider, "server_error", str(error) or type(error).__name__)
    if isinstance(error, json.JSONDecodeError | pydantic.ValidationError | ValueError):
        return ProviderFailure(provider, "malformed", "the stream sent a chunk it cannot parse")
    return ProviderFailure(provider, "connection", f"{type(error).__name__}: {error}")
