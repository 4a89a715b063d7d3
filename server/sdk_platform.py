"""The SDK clients' platform header, looked up once when a client is built, not per request.

Both SDKs name the OS in an `X-Stainless-OS` header. They leave it unknown until a
client's first request, which looks it up on a thread (`asyncify(get_platform)`), and
so does every request that starts before that one has finished. A fresh core's first
burst of real-provider jobs made up to one thread hand-off per job on the loop's default
executor, queued with the knowledge reads of the jobs' own plan stages, before their
model requests went out (BENCHMARKS.md, session 24). The core's provider clients and the
OpenAI embedder's client are primed when they are built.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    import anthropic
    import openai


def is_anthropic(
    client: openai.AsyncOpenAI | anthropic.AsyncAnthropic,
) -> TypeGuard[anthropic.AsyncAnthropic]:
    """Whether `client` is an `anthropic` SDK client, told by its class without importing
    the SDK: a process that made such a client imported it, and one that did not has none."""
    sdk = sys.modules.get("anthropic")
    return sdk is not None and isinstance(client, sdk.AsyncAnthropic)


def prime_platform(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic) -> None:
    """Look up `client`'s platform now, as its first request would: with the SDK's own
    `get_platform`, which caches what it reads. A client already primed, or of an SDK
    version without the attribute, is left as it is."""
    if getattr(client, "_platform", False) is not None:
        return
    sdk = "anthropic" if is_anthropic(client) else "openai"  # the other need not load
    client._platform = importlib.import_module(f"{sdk}._base_client").get_platform()
