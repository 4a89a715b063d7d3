"""Settings of API keys, job tokens and per-tenant limits, and their flags.

Like server.config, every setting is a flag whose default comes from a
`SCRIPTGEN_*` variable, except the token secret, which is read only from
SCRIPTGEN_TOKEN_SECRET (never a flag, so never in `ps`).

| variable                           | default   | meaning                                   |
|------------------------------------|-----------|-------------------------------------------|
| SCRIPTGEN_AUTH                     | enabled   | `disabled` turns API keys off (loopback   |
|                                    |           | listen addresses only; logs a warning)    |
| SCRIPTGEN_TOKEN_SECRET             | generated | HMAC secret of job tokens; empty: one is  |
|                                    |           | generated once and kept in the project    |
|                                    |           | store, so replicas sharing it agree       |
| SCRIPTGEN_JOB_TOKEN_SECONDS        | 900       | lifetime of an eventsUrl's access_token   |
| SCRIPTGEN_KEY_CACHE_SECONDS        | 10        | how long a core trusts a looked-up key:   |
|                                    |           | a revoked key stops working within this   |
| SCRIPTGEN_RATE_LIMIT_REQUESTS      | 200       | calls per key per window                  |
| SCRIPTGEN_RATE_LIMIT_WINDOW_SECONDS| 60        | the window (a token bucket refilling      |
|                                    |           | requests/window per second)               |
| SCRIPTGEN_MAX_STREAMS_PER_TENANT   | 50        | open event streams per tenant             |
| SCRIPTGEN_DAILY_TOKEN_BUDGET       | 2000000   | tokens a tenant's jobs may write per UTC  |
|                                    |           | day (0: unlimited)                        |

Per-tenant values set with `scriptgen keys limits TENANT …` override the last four.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

AUTH_MODES: Final = ("enabled", "disabled")


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    """The core's default limits; a tenant's own values override them."""

    #: Calls per key per window.
    requests_per_window: int = 200
    #: The window of `requests_per_window`, in seconds.
    window_seconds: int = 60
    #: Event streams (GenerateScript, StreamGenerationEvents) open at once per tenant.
    max_streams: int = 50
    #: Tokens a tenant's jobs may write per UTC day; 0: unlimited.
    daily_tokens: int = 2_000_000


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """API keys, job tokens and per-tenant limits."""

    #: False only with SCRIPTGEN_AUTH=disabled: no keys, one tenant, no limits; loopback only.
    enabled: bool = True
    #: HMAC secret of job tokens; empty: generated once and kept in the project store.
    token_secret: str = field(default="", repr=False)
    #: Lifetime of a job token, in seconds.
    job_token_seconds: float = 900.0
    #: How long a looked-up key is trusted before it is read again (revocation latency).
    key_cache_seconds: float = 10.0
    #: Default limits.
    limits: LimitDefaults = field(default_factory=LimitDefaults)


def is_loopback(address: str) -> bool:
    """Whether a `host:port` listen address only accepts local connections."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_disabled_auth(config: AuthConfig, *addresses: str) -> None:
    """ValueError when auth is off and any of `addresses` listens beyond loopback."""
    if config.enabled:
        return
    for address in addresses:
        if not is_loopback(address):
            raise ValueError(
                f"SCRIPTGEN_AUTH=disabled only works on loopback addresses, not {address!r};"
                " listen on 127.0.0.1 or turn auth back on"
            )


def add_auth_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Declare the auth and limit flags."""
    group = parser.add_argument_group("API keys, tenants and limits")
    group.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default=env.get("SCRIPTGEN_AUTH", "enabled").strip().lower() or "enabled",
        help="API keys on or off; 'disabled' works only on loopback addresses [SCRIPTGEN_AUTH]"
        " (default: %(default)s)",
    )
    defaults = LimitDefaults()
    number_flags: list[tuple[str, str, type[int] | type[float], object, str]] = [
        ("job-token-seconds", "JOB_TOKEN_SECONDS", float, 900.0, "lifetime of job tokens"),
        (
            "key-cache-seconds",
            "KEY_CACHE_SECONDS",
            float,
            10.0,
            "how long a looked-up key is trusted (revocation takes effect within this)",
        ),
        (
            "rate-limit-requests",
            "RATE_LIMIT_REQUESTS",
            int,
            defaults.requests_per_window,
            "calls per key per window",
        ),
        (
            "rate-limit-window-seconds",
            "RATE_LIMIT_WINDOW_SECONDS",
            int,
            defaults.window_seconds,
            "the rate-limit window",
        ),
        (
            "max-streams-per-tenant",
            "MAX_STREAMS_PER_TENANT",
            int,
            defaults.max_streams,
            "event streams open at once per tenant",
        ),
        (
            "daily-token-budget",
            "DAILY_TOKEN_BUDGET",
            int,
            defaults.daily_tokens,
            "tokens a tenant's jobs may write per UTC day (0: unlimited)",
        ),
    ]
    for flag, name, kind, default, text in number_flags:
        group.add_argument(
            f"--{flag}",
            type=kind,
            default=kind(env.get(f"SCRIPTGEN_{name}", str(default))),
            help=f"{text} [SCRIPTGEN_{name}] (default: %(default)s)",
        )
    parser.set_defaults(token_secret=env.get("SCRIPTGEN_TOKEN_SECRET", ""))


def auth_from_arguments(namespace: argparse.Namespace) -> AuthConfig:
    """The AuthConfig of parsed flags; ValueError for a limit that makes no sense."""
    limits = LimitDefaults(
        requests_per_window=int(namespace.rate_limit_requests),
        window_seconds=int(namespace.rate_limit_window_seconds),
        max_streams=int(namespace.max_streams_per_tenant),
        daily_tokens=int(namespace.daily_token_budget),
    )
    if limits.requests_per_window < 1 or limits.window_seconds < 1 or limits.max_streams < 1:
        raise ValueError("rate limits and stream limits must be at least 1")
    if limits.daily_tokens < 0:
        raise ValueError("the daily token budget must not be negative (0: unlimited)")
    secret = str(namespace.token_secret)
    if secret and len(secret) < 16:
        raise ValueError("SCRIPTGEN_TOKEN_SECRET must be at least 16 characters")
    return AuthConfig(
        enabled=str(namespace.auth) != "disabled",
        token_secret=secret,
        job_token_seconds=float(namespace.job_token_seconds),
        key_cache_seconds=float(namespace.key_cache_seconds),
        limits=limits,
    )
