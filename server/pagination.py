"""Opaque page tokens: a keyset position, base64url-encoded and checked on the way back in."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from server.errors import invalid

_TOKEN_MAX = 1000
# Not a secret: it only lets the core tell its own tokens from garbage.
_TAG = b"scriptgen-page-token-v1"


def _mac(body: bytes) -> str:
    return hashlib.blake2s(body, key=_TAG, digest_size=8).hexdigest()


def encode(kind: str, position: list[str | int]) -> str:
    """A token that resumes a listing of `kind` after `position`."""
    body = json.dumps([kind, position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body + b"." + _mac(body).encode()).decode().rstrip("=")


def decode(field: str, kind: str, token: str) -> list[str | int] | None:
    """The position in `token`, None for an empty token, INVALID_ARGUMENT for a bad one."""
    if not token:
        return None
    problem = "is not a page token from a previous response of this list"
    if len(token) > _TOKEN_MAX:
        raise invalid(field, problem)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body, _, mac = raw.rpartition(b".")
        if _mac(body).encode() != mac:
            raise ValueError("bad tag")
        token_kind, position = json.loads(body)
    except (ValueError, binascii.Error, TypeError):
        raise invalid(field, problem) from None
    if token_kind != kind or not isinstance(position, list):
        raise invalid(field, problem)
    if not all(isinstance(p, str | int) for p in position):
        raise invalid(field, problem)
    return position
