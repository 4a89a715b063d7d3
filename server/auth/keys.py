"""API keys: `sg_<id>_<secret>`, shown once; the store keeps only the secret's SHA-256.

The id (`k` + 12 hex digits) finds the stored record; the secret (48 hex digits,
192 random bits) is compared by hash in constant time. A key is sent as
`authorization: Bearer sg_…` (gRPC metadata or the HTTP header).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from typing import Final

from server.auth.records import ApiKey, check_scopes, check_tenant

PREFIX: Final = "sg_"
_KEY: Final = re.compile(r"sg_(k[0-9a-f]{12})_([0-9a-f]{48})")


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    tenant: str, scopes: Sequence[str], *, description: str = "", create_time: int = 0
) -> tuple[str, ApiKey]:
    """A fresh key for `tenant`: the plaintext (show it once) and the record to store."""
    key_id = f"k{secrets.token_hex(6)}"
    secret = secrets.token_hex(24)
    record = ApiKey(
        key_id=key_id,
        tenant=check_tenant(tenant),
        scopes=check_scopes(scopes),
        secret_sha256=hash_secret(secret),
        description=description,
        create_time=create_time,
    )
    return f"{PREFIX}{key_id}_{secret}", record


def parse(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key; None for anything else."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def matches(record: ApiKey, secret: str) -> bool:
    """Whether `secret` is the key's secret (constant time)."""
    return hmac.compare_digest(record.secret_sha256, hash_secret(secret))
