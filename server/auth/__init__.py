"""API keys, tenants and job tokens.

The modules here are leaves (no store, no servicer imports) so the stores can
use the records; `server.auth.guard` is what every RPC passes through.
"""

from server.auth.job_tokens import JobGrant, JobTokens
from server.auth.keys import new_key
from server.auth.records import (
    ADMIN,
    DEFAULT_TENANT,
    READ,
    SCOPES,
    WRITE,
    ApiKey,
    KeyStore,
    TenantLimits,
)
from server.auth.settings import AuthConfig, LimitDefaults

__all__ = [
    "ADMIN",
    "DEFAULT_TENANT",
    "READ",
    "SCOPES",
    "WRITE",
    "ApiKey",
    "AuthConfig",
    "JobGrant",
    "JobTokens",
    "KeyStore",
    "LimitDefaults",
    "TenantLimits",
    "new_key",
]
