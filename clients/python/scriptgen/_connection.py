"""How a client reaches the core: the API key and the metadata every call sends, the channel."""

from __future__ import annotations

import os
from dataclasses import replace

import grpc
import grpc.aio

from scriptgen._config import ClientConfig

#: Where the API key comes from when `ClientConfig.api_key` is empty (as the CLI reads it).
API_KEY_VARIABLE = "SCRIPTGEN_API_KEY"
#: The header that carries the API key.
_AUTHORIZATION = "authorization"


def call_metadata(config: ClientConfig) -> tuple[ClientConfig, tuple[tuple[str, str], ...]]:
    """The config with its API key found, and the metadata every call sends.

    The key comes from the config, or else from SCRIPTGEN_API_KEY unless the
    config's metadata carries its own `authorization`; it is added to the
    calls' metadata only, never to `config.metadata`, so a copy of the config
    with another key sends that key alone.
    """
    own_authorization = any(key.lower() == _AUTHORIZATION for key, _ in config.metadata)
    if config.api_key and own_authorization:
        raise ValueError(
            "ClientConfig.api_key and an 'authorization' entry in ClientConfig.metadata"
            " both set the credentials; give one of them"
        )
    if not config.api_key and not own_authorization:
        from_environment = os.environ.get(API_KEY_VARIABLE, "").strip()
        if from_environment:
            config = replace(config, api_key=from_environment)
    if not config.api_key:
        return config, config.metadata
    return config, (*config.metadata, (_AUTHORIZATION, f"Bearer {config.api_key}"))


def open_channel(config: ClientConfig) -> grpc.aio.Channel:
    """A channel to `config.target`: TLS (with `config.root_certificates`, or the system's
    roots) or plaintext."""
    if config.tls:
        credentials = grpc.ssl_channel_credentials(config.root_certificates)
        return grpc.aio.secure_channel(config.target, credentials, options=config.channel_options())
    return grpc.aio.insecure_channel(config.target, options=config.channel_options())
