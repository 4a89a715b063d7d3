"""Short-lived tokens that let a plain EventSource follow one job.

`sgjt.<payload>.<signature>`: the payload is base64url JSON `{"g": generation,
"t": tenant, "e": expiry (Unix seconds)}`, the signature its HMAC-SHA256 under
the core's token secret (SCRIPTGEN_TOKEN_SECRET; replicas must share it). A job
token allows exactly one thing: StreamGenerationEvents of that generation, for
that tenant, until it expires. It is URL-safe, so it travels as
`?access_token=` on the eventsUrl; logs never show it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "sgjt."


@dataclass(frozen=True, slots=True)
class JobGrant:
    """What a valid job token allows."""

    generation: str
    tenant: str
    expires: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class JobTokens:
    """Signs and checks job tokens with one secret."""

    def __init__(self, secret: bytes, lifetime_seconds: float) -> None:
        if len(secret) < 16:
            raise ValueError("the job-token secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime_seconds = lifetime_seconds

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, generation: str, tenant: str, now: float | None = None) -> str:
        """A token for following `generation` as `tenant`."""
        expires = int((time.time() if now is None else now) + self.lifetime_seconds)
        body = json.dumps({"g": generation, "t": tenant, "e": expires}, separators=(",", ":"))
        payload = _b64(body.encode())
        return f"{PREFIX}{payload}.{self._sign(payload)}"

    def check(self, token: str, now: float | None = None) -> JobGrant | None:
        """The grant of a valid, unexpired token; None otherwise."""
        if not token.startswith(PREFIX) or len(token) > 1024:
            return None
        payload, _, signature = token[len(PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
            grant = JobGrant(str(claims["g"]), str(claims["t"]), int(claims["e"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if grant.expires < (time.time() if now is None else now):
            return None
        return grant
