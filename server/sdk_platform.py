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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anthropic
    import openai


def prime_platform(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic) -> None:
    """Look up `client`'s platform now, as its first request would: with the SDK's own
    `get_platform`, which caches what it reads. A client already primed, or of an SDK
    version without the attribute, is left as it is."""
    if getattr(client, "_platform", False) is not None:
        return
    # The client's own SDK, by its class: the process imported that SDK to make the client,
    # and need not import the other.
    anthropic_sdk = sys.modules.get("anthropic")
    is_anthropic = anthropic_sdk is not None and isinstance(client, anthropic_sdk.AsyncAnthropic)
    sdk = "anthropic" if is_anthropic else "openai"
    client._platform = importlib.import_module(f"{sdk}._base_client").get_platform()
