"""What auth keeps in the project store: API keys (only a hash of each) and tenant limits.

Scopes say what a key may do:

| scope   | allows                                                                     |
|---------|----------------------------------------------------------------------------|
| `read`  | every Get/List/Export call and following a job's events                    |
| `write` | creating, updating and deleting projects, episodes and knowledge, starting |
|         | and cancelling jobs (a `write` key may read too)                           |
| `admin` | everything `write` allows; reserved for operator calls (keys themselves    |
|         | are managed by `scriptgen keys`, which talks to the store directly)        |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

READ: Final = "read"
WRITE: Final = "write"
ADMIN: Final = "admin"
SCOPES: Final = (READ, WRITE, ADMIN)
#: What each scope implies (a key holding the first may do what the rest allow).
IMPLIED: Final = {READ: (READ,), WRITE: (WRITE, READ), ADMIN: (ADMIN, WRITE, READ)}
#: The tenant of every record made while auth is off, and of data older than tenants.
DEFAULT_TENANT: Final = "default"
TENANT_PATTERN: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")


def check_tenant(tenant: str) -> str:
    """`tenant` when it is a valid tenant id (`[a-z][a-z0-9-]{0,62}`); ValueError otherwise."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} must match [a-z][a-z0-9-]{{0,62}}")
    return tenant


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """Known scopes, deduplicated in a stable order; ValueError naming an unknown one."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    return tuple(scope for scope in SCOPES if scope in scopes)


def granted(scopes: Sequence[str]) -> frozenset[str]:
    """Every scope a key holding `scopes` may use."""
    return frozenset(implied for scope in scopes for implied in IMPLIED.get(scope, ()))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored: never the secret, only its SHA-256."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    secret_sha256: str
    description: str = ""
    #: Microseconds since the Unix epoch.
    create_time: int = 0
    #: 0 while the key is valid.
    revoke_time: int = 0

    @property
    def revoked(self) -> bool:
        return self.revoke_time != 0


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's own limits; 0 means the core's default for that limit."""

    tenant: str
    requests_per_window: int = 0
    window_seconds: int = 0
    max_streams: int = 0
    daily_tokens: int = 0


class KeyStore(Protocol):
    """Where keys and tenant limits live (the project store, so every replica shares them)."""

    async def create_key(self, key: ApiKey) -> None:
        """Store a new key (and its tenant, if new)."""

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not; None when unknown."""

    async def list_keys(self, tenant: str = "") -> list[ApiKey]:
        """Every key (of one tenant when given), oldest first."""

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such key (revoking twice is fine)."""

    async def get_tenant_limits(self, tenant: str) -> TenantLimits:
        """The tenant's limits (all 0 — the defaults — when none were set)."""

    async def set_tenant_limits(self, limits: TenantLimits) -> None:
        """Replace the tenant's limits."""

    async def shared_secret(self, name: str, candidate: str) -> str:
        """The secret named `name`: `candidate` if none was stored yet, else the stored one."""
