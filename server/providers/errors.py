"""Provider failures: one exception type, classified so the router knows what to do next.

| kind                 | retryable | breaker | from                                       |
|----------------------|-----------|---------|--------------------------------------------|
| rate_limited         | yes       | charged | HTTP 429 (Retry-After honoured), Anthropic |
|                      |           |         | `rate_limit_error` event                   |
| overloaded           | yes       | charged | HTTP 529, Anthropic `overloaded_error`     |
| server_error         | yes       | charged | HTTP 5xx, 408, 409, other error events     |
| timeout              | yes       | charged | the SDK's HTTP timeout (connect or read)   |
| connection           | yes       | charged | refused, reset or cut connections; a       |
|                      |           |         | stream that ends without its end marker    |
| worker_lost          | yes       | no      | the call's provider worker exited (core)   |
| malformed            | yes       | charged | a chunk the SDK cannot parse               |
| first_token_timeout  | yes       | charged | no token within the first-token timeout    |
| idle_timeout         | yes       | charged | silence between tokens too long (router)   |
| deadline             | no        | no      | the caller's deadline passed (router)      |
| bad_request          | no        | no      | other 4xx: 400, 413 …; Anthropic           |
|                      |           |         | `invalid_request_error` event              |
| misconfigured        | no        | charged | 404, 422; Anthropic `not_found_error`      |
|                      |           |         | event: no such model, endpoint or field    |
| refused              | no        | no      | OpenAI `content_filter` or a refusal,      |
|                      |           |         | Anthropic `refusal`                        |
| output_exhausted     | no        | no      | a text stopped at the output cap with      |
|                      |           |         | nothing new written (router)               |
| auth                 | no        | charged | 401, 403, Anthropic `authentication_error` |
|                      |           |         | or `permission_error` event                |

`worker_lost` is the core's own failure, not the provider's: the router calls the same
provider again at once, from the text already delivered, without charging its breaker
(`server.providers.router`). `bad_request` and `deadline` are the caller's (a prompt too
long, a short gRPC deadline), and `refused` and `output_exhausted` are verdicts on the
text (a reasoning model that spent its whole output cap thinking on this prompt), not on
the provider's health: they release the breaker instead of charging it, so that one
caller's requests cannot take a provider out of every other caller's chains.
`misconfigured` is the operator's: a model name or endpoint the provider does not know
(404), or a request shape it does not take (422), fails every call alike, so it is
charged and the breaker takes the provider out of the chains until it is fixed.
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
        "overloaded",
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
#: The model declined to write, or the provider's filter cut its text.
REFUSED = "refused"
#: The request as it stands cannot be served (a prompt too long, a full context window).
BAD_REQUEST = "bad_request"
#: The provider is set up with a model, endpoint or request field it does not know.
MISCONFIGURED = "misconfigured"
#: A text stopped at the output cap without anything new in it (the router's verdict).
OUTPUT_EXHAUSTED = "output_exhausted"

#: Failures that say nothing about the provider's health: its breaker is released.
UNCHARGED_KINDS = frozenset({WORKER_LOST, BAD_REQUEST, "deadline", REFUSED, OUTPUT_EXHAUSTED})

#: The kind of an `error` event inside a stream that began 200 OK, by its `error.type`
#: (Anthropic's error types; an OpenAI error chunk's `type` where it matches one).
_STREAM_ERROR_KINDS = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limited",
    "invalid_request_error": BAD_REQUEST,
    "request_too_large": BAD_REQUEST,
    "not_found_error": MISCONFIGURED,
    "authentication_error": "auth",
    "permission_error": "auth",
    "billing_error": "auth",
    "timeout_error": "timeout",
    "api_error": "server_error",
}


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


def _status_kind(status: int, body: object) -> str:
    if status < 400:
        return _stream_error_kind(body)  # an error event inside a stream that began 200 OK
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if status >= 500 or status in (408, 409):
        return "server_error"
    if status in (404, 422):
        return MISCONFIGURED
    return BAD_REQUEST


def _stream_error_type(body: object) -> str:
    """The `type` of an error event's body (`{"type": "error", "error": {"type": …}}`, or
    the `error` object alone); "" when it has none."""
    error = body.get("error", body) if isinstance(body, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    return kind if isinstance(kind, str) else ""


def _stream_error_kind(body: object) -> str:
    """The kind of an error event; `server_error` when its type is not known."""
    return _STREAM_ERROR_KINDS.get(_stream_error_type(body), "server_error")


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
        code = status.status_code
        return ProviderFailure(
            provider,
            _status_kind(code, status.body),
            f"HTTP {code}" if code >= 400 else f"error event {_stream_error_type(status.body)!r}",
            retry_after=retry_after(status.response.headers),
        )
    if isinstance(error, _sdk_classes("APITimeoutError")):
        return ProviderFailure(provider, "timeout", "the HTTP request timed out")
    if isinstance(error, _sdk_classes("APIConnectionError")):
        return ProviderFailure(provider, "connection", "the connection failed")
    if isinstance(error, _sdk_classes("APIError")):
        # An `error` chunk inside an OpenAI stream.
        kind = _stream_error_kind(cast("openai.APIError", error).body)
        return ProviderFailure(provider, kind, str(error) or type(error).__name__)
    if isinstance(error, json.JSONDecodeError | pydantic.ValidationError | ValueError):
        return ProviderFailure(provider, "malformed", "the stream sent a chunk it cannot parse")
    return ProviderFailure(provider, "connection", f"{type(error).__name__}: {error}")
