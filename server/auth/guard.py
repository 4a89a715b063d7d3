"""Who is calling, and may they: the check every RPC passes before its servicer runs.

`services.calls` asks the `Guard` for each call: it reads `authorization:
Bearer …` from the metadata (an API key, or a job token on
StreamGenerationEvents), checks the method's scope, then the key's request
rate and, for event streams, the tenant's open streams. The result, a
`Caller`, is the call's context variable: servicers read its tenant and every
store, registry and knowledge query filters by it. Health and reflection are
separate services and stay open.

Looked-up keys are cached for `key_cache_seconds` (10 s): revoking a key takes
effect on every core within that time.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from server.auth import keys
from server.auth.job_tokens import JobTokens
from server.auth.records import (
    ADMIN,
    DEFAULT_TENANT,
    READ,
    SCOPES,
    WRITE,
    ApiKey,
    KeyStore,
    TenantLimits,
    granted,
)
from server.auth.settings import AuthConfig
from server.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from server.metrics import CoreMetrics
from server.ratelimit import Decision, Limiter, TokenBudget

log = logging.getLogger(__name__)

#: Methods a `read` key may call; every other method needs `write`.
READ_METHODS = frozenset(
    {
        "GetProject",
        "ListProjects",
        "ListEpisodes",
        "GetEpisode",
        "ExportEpisode",
        "ListKnowledgeDocuments",
        "GetKnowledgeDocument",
        "GetGeneration",
        "ListGenerations",
        "StreamGenerationEvents",
    }
)
#: The one method a job token may call.
JOB_TOKEN_METHOD = "StreamGenerationEvents"
#: An open stream's lease on its tenant's stream count; renewed while it is open.
STREAM_LEASE_SECONDS = 120.0
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a call is from: a tenant, by a key (or job token) with some scopes."""

    tenant: str
    #: The API key's id; empty for a job token or with auth off.
    key_id: str = ""
    scopes: frozenset[str] = frozenset(SCOPES)
    #: Set for a job token: the only generation it may follow.
    generation: str = ""
    #: Whether per-key and per-tenant limits apply (not with auth off).
    limited: bool = False

    @property
    def rate_key(self) -> str:
        """Whose bucket a request takes from."""
        return self.key_id or f"job-token:{self.generation}"


#: The caller of the RPC being served. Unset outside a call: internal work is unrestricted.
CALLER: ContextVar[Caller | None] = ContextVar("scriptgen_caller", default=None)
_ANONYMOUS = Caller(DEFAULT_TENANT)


def current_tenant() -> str | None:
    """The tenant of the call being served; None outside a call (internal work)."""
    caller = CALLER.get()
    return None if caller is None else caller.tenant


def tenant_in_scope(tenant: str | None = None) -> str:
    """Whose projects a store or knowledge query is for.

    `tenant` when given (servicers pass it); else the tenant of the call being
    served — a job's task inherits the context of the call that started it, so
    its pipeline saves and indexes into its own tenant's project; else the
    default tenant (work outside any call: the CLI, tests). Project ids are
    unique per tenant only, so every query is for exactly one tenant.
    """
    if tenant is not None:
        return tenant
    caller = CALLER.get()
    return DEFAULT_TENANT if caller is None else caller.tenant


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, credentials = value.strip().partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else ""
    return None


class Guard:
    """Authenticates calls and applies the per-key and per-tenant limits."""

    def __init__(
        self,
        config: AuthConfig,
        store: KeyStore,
        limiter: Limiter,
        metrics: CoreMetrics,
        tokens: JobTokens | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._limiter = limiter
        self._metrics = metrics
        self.tokens = tokens
        self._keys: dict[str, tuple[ApiKey | None, float]] = {}
        self._limits: dict[str, tuple[TenantLimits, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def _reject(self, error: Unauthenticated | PermissionDenied) -> None:
        self._metrics.auth_rejections.labels(error.reason).inc()
        raise error

    async def _key(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = await self._store.get_key(key_id)
        if len(self._keys) >= _CACHE_MAX:
            self._keys.clear()
        self._keys[key_id] = (found, now + self.config.key_cache_seconds)
        return found

    async def authenticate(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        request: object,
    ) -> Caller:
        """The caller of `method`, or UNAUTHENTICATED / PERMISSION_DENIED."""
        if not self.config.enabled:
            return _ANONYMOUS
        credentials = _bearer(metadata)
        if not credentials:
            self._reject(
                Unauthenticated(
                    "this call needs an API key: send 'authorization: Bearer <key>'",
                    reason="API_KEY_MISSING",
                )
            )
        assert credentials is not None
        if self.tokens is not None and credentials.startswith("sgjt."):
            return self._job_caller(method, credentials, request)
        parsed = keys.parse(credentials)
        record = None if parsed is None else await self._key(parsed[0])
        if (
            parsed is None
            or record is None
            or record.revoked
            or not keys.matches(record, parsed[1])
        ):
            self._reject(Unauthenticated("the API key is not valid", reason="API_KEY_INVALID"))
        assert record is not None
        scopes = granted(record.scopes)
        needed = READ if method in READ_METHODS else WRITE
        if needed not in scopes:
            self._reject(
                PermissionDenied(
                    f"{method} needs a key with the {needed!r} scope", reason="INSUFFICIENT_SCOPE"
                )
            )
        return Caller(record.tenant, record.key_id, scopes, limited=True)

    def _job_caller(self, method: str, token: str, request: object) -> Caller:
        assert self.tokens is not None
        grant = self.tokens.check(token)
        if grant is None:
            self._reject(
                Unauthenticated("the job token is not valid or expired", reason="JOB_TOKEN_INVALID")
            )
        assert grant is not None
        if method != JOB_TOKEN_METHOD or getattr(request, "name", None) != grant.generation:
            self._reject(
                PermissionDenied(
                    "a job token only follows the events of its own job", reason="JOB_TOKEN_SCOPE"
                )
            )
        return Caller(
            grant.tenant, "", frozenset({READ}), generation=grant.generation, limited=True
        )

    async def limits(self, tenant: str) -> TenantLimits:
        """The tenant's limits with the core's defaults filled in (cached like keys)."""
        now = time.monotonic()
        cached = self._limits.get(tenant)
        if cached is None or cached[1] <= now:
            own = await self._store.get_tenant_limits(tenant)
            if len(self._limits) >= _CACHE_MAX:
                self._limits.clear()
            cached = (own, now + self.config.key_cache_seconds)
            self._limits[tenant] = cached
        own, defaults = cached[0], self.config.limits
        return TenantLimits(
            tenant,
            requests_per_window=own.requests_per_window or defaults.requests_per_window,
            window_seconds=own.window_seconds or defaults.window_seconds,
            max_streams=own.max_streams or defaults.max_streams,
            daily_tokens=own.daily_tokens or defaults.daily_tokens,
        )

    async def admit(self, caller: Caller) -> Decision | None:
        """Take one request from the caller's rate limit; None when no limit applies."""
        if not caller.limited:
            return None
        limits = await self.limits(caller.tenant)
        decision = await self._limiter.hit(
            caller.rate_key, limits.requests_per_window, limits.window_seconds
        )
        if not decision.allowed:
            self._metrics.rate_limit_rejections.labels("requests").inc()
            error = ResourceExhausted(
                f"rate limit of {decision.limit} calls per {limits.window_seconds} s reached;"
                " slow down",
                reason="RATE_LIMITED",
                retry_after=max(0.001, decision.retry_after_seconds),
            )
            error.trailers = decision.headers()
            raise error
        return decision

    async def open_stream(self, caller: Caller) -> str | None:
        """Count an event stream against the tenant's limit; its id (None: not counted)."""
        if not caller.limited:
            return None
        limits = await self.limits(caller.tenant)
        stream = secrets.token_hex(8)
        if not await self._limiter.open_stream(
            caller.tenant, stream, limits.max_streams, STREAM_LEASE_SECONDS
        ):
            self._metrics.rate_limit_rejections.labels("streams").inc()
            raise ResourceExhausted(
                f"tenant {caller.tenant!r} has its maximum of {limits.max_streams} event streams"
                " open; close one or retry later",
                reason="TOO_MANY_STREAMS",
                retry_after=5.0,
            )
        return stream

    async def renew_stream(self, caller: Caller, stream: str) -> None:
        await self._limiter.renew_stream(caller.tenant, stream, STREAM_LEASE_SECONDS)

    async def close_stream(self, caller: Caller, stream: str) -> None:
        await self._limiter.close_stream(caller.tenant, stream)

    async def budget(self, caller: Caller | None) -> TokenBudget | None:
        """The daily token budget a job started by `caller` counts against (None: unlimited)."""
        if caller is None or not caller.limited:
            return None
        limits = await self.limits(caller.tenant)
        if limits.daily_tokens <= 0:
            return None
        return TokenBudget(self._limiter, caller.tenant, limits.daily_tokens)

    def job_token(self, generation: str, caller: Caller) -> str | None:
        """A token that lets a browser follow `generation` (None with auth off)."""
        if self.tokens is None or not self.config.enabled:
            return None
        return self.tokens.issue(generation, caller.tenant)


__all__ = ["ADMIN", "CALLER", "Caller", "Guard", "current_tenant", "tenant_in_scope"]
