"""Builds the configured providers: one SDK client per provider, one Provider per stage route.

An SDK is imported when a provider of it is built, not before: a core (or a provider
worker) whose chains name only the synthetic writer and OpenAI never loads `anthropic`
(~3,700 modules, ~1.3 s and ~45 MiB here), and one of the synthetic writer alone loads
neither SDK.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import httpx2

from server.config import ProviderConfig, ProvidersConfig, Route, SyntheticConfig
from server.providers.base import Provider
from server.providers.http_transport import sdk_transport
from server.providers.synthetic import SyntheticProvider
from server.providers.worker_pool import OffloadedProvider, ProviderWorkers
from server.sdk_platform import is_anthropic, prime_platform

if TYPE_CHECKING:
    import anthropic
    import openai

#: The SDKs' own HTTP timeout for reads, writes and a pooled connection: only a backstop,
#: the router times every token.
SDK_TIMEOUT_SECONDS = 600.0
#: The time a new connection (TCP and TLS) may take: its own limit, far below the
#: backstop. A host that never answers the SYN would otherwise hold each attempt for the
#: router's whole first-token timeout (30 s), failing as a slow model; this way it fails
#: as the `timeout` it is, within seconds, and is retried or failed over as one.
SDK_CONNECT_TIMEOUT_SECONDS = 5.0


def sdk_timeout() -> httpx2.Timeout:
    """The SDK clients' timeout: SDK_CONNECT_TIMEOUT_SECONDS to connect, else the backstop."""
    return httpx2.Timeout(SDK_TIMEOUT_SECONDS, connect=SDK_CONNECT_TIMEOUT_SECONDS)


# Every SDK client sends its requests over aiohttp (the SDKs' `DefaultAioHttpClient`, with
# `server.providers.http_transport` under it): reading a streamed body through
# httpx2/httpcore2/h11 cost more CPU per token than the rest of the provider path, and the
# transport reads a body once per delta cut. Requests, auth, status errors and timeouts
# stay the SDKs'.


@dataclass(slots=True)
class StageProviders:
    """The provider chain of each model-using stage, and the SDK clients to close."""

    plan: list[Provider]
    write: list[Provider]
    clients: list[openai.AsyncOpenAI | anthropic.AsyncAnthropic] = field(default_factory=list)
    #: The processes the HTTP providers' calls run in, when they are offloaded.
    workers: ProviderWorkers | None = None

    def names(self) -> list[str]:
        """Every provider either stage may use, in chain order."""
        seen: list[str] = []
        for provider in (*self.plan, *self.write):
            if provider.name not in seen:
                seen.append(provider.name)
        return seen

    async def start(self) -> None:
        """Start the provider workers, if any (raises when one does not come up)."""
        if self.workers is not None:
            await self.workers.start()

    async def aclose(self) -> None:
        """Stop the provider workers and close the SDK clients (their HTTP connection pools)."""
        if self.workers is not None:
            await self.workers.close()
        for client in self.clients:
            await client.close()


def build_providers(
    config: ProvidersConfig,
    synthetic: SyntheticConfig,
    *,
    workers: int = 0,
    window_seconds: float = 0.0,
) -> StageProviders:
    """Instantiate every provider the stage chains name.

    With `workers` (at least 1), the HTTP providers' calls run in that many provider
    worker processes (`server.providers.worker_pool`), started by `StageProviders.start`;
    `window_seconds` is the delta window their paced calls are read by.
    """
    pool = (
        ProviderWorkers(config, workers, window_seconds)
        if workers > 0 and any(name != "synthetic" for name in config.chain)
        else None
    )
    clients: dict[str, openai.AsyncOpenAI | anthropic.AsyncAnthropic] = {}
    built: dict[tuple[str, str], Provider] = {}
    max_tokens = config.router.max_output_tokens

    def client_of(settings: ProviderConfig) -> openai.AsyncOpenAI | anthropic.AsyncAnthropic:
        if settings.name not in clients:
            base_url = settings.base_url or None
            if settings.name == "local":
                from server.providers.local import local_client

                clients[settings.name] = local_client(settings, timeout=sdk_timeout())
            elif settings.name == "anthropic":
                import anthropic

                clients[settings.name] = anthropic.AsyncAnthropic(
                    api_key=settings.api_key,
                    base_url=base_url,
                    max_retries=0,
                    timeout=sdk_timeout(),
                    http_client=anthropic.DefaultAioHttpClient(transport=sdk_transport()),
                )
            else:
                import openai

                clients[settings.name] = openai.AsyncOpenAI(
                    api_key=settings.api_key or "local",
                    base_url=base_url,
                    max_retries=0,
                    timeout=sdk_timeout(),
                    http_client=openai.DefaultAioHttpClient(transport=sdk_transport()),
                )
        return clients[settings.name]

    def provider_of(route: Route) -> Provider:
        key = (route.provider, route.model)
        if key in built:
            return built[key]
        provider: Provider
        if route.provider == "synthetic":
            provider = SyntheticProvider(synthetic)
        elif pool is not None:
            provider = OffloadedProvider(route.provider, route.model, pool)
        elif route.provider == "local":
            from server.providers.local import local_provider

            settings = config.provider("local")
            provider = local_provider(
                _openai(client_of(settings)),
                route.model,
                max_output_tokens=settings.max_output_tokens or max_tokens,
                include_usage=settings.include_usage,
            )
        else:
            client = client_of(config.provider(route.provider))
            if is_anthropic(client):
                from server.providers.anthropic_messages import AnthropicMessagesProvider

                provider = AnthropicMessagesProvider(
                    client, route.model, max_output_tokens=max_tokens
                )
            else:
                from server.providers.openai_chat import OpenAIChatProvider

                provider = OpenAIChatProvider(
                    _openai(client), route.model, max_output_tokens=max_tokens
                )
        built[key] = provider
        return provider

    def chain(routes: Sequence[Route]) -> list[Provider]:
        return [provider_of(route) for route in routes]

    stages = StageProviders(chain(config.plan.routes), chain(config.write.routes), workers=pool)
    for client in clients.values():
        prime_platform(client)
    stages.clients.extend(clients.values())
    return stages


def _openai(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic) -> openai.AsyncOpenAI:
    """`client`, which `client_of` made with the `openai` SDK (every client but Anthropic's)."""
    assert not is_anthropic(client)
    return cast("openai.AsyncOpenAI", client)
