"""Opaque page tokens: a keyset position, base64url-encoded and checked on the way back in.

A token names its list (`projects`, `episodes:{project}`, `generations:{parent}`,
`knowledge:{project}:{kind}`) and holds the keyset position of the last entry of its
page, in the shape `POSITIONS` gives for the list's kind (its name up to the first
`:`). A token that does not name the list asked for, or whose position is not of that
shape — each entry of its type, each number in the range the stores take — is
INVALID_ARGUMENT, so nothing but a position the stores could have made reaches them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from server.errors import invalid
from server.limits import EPISODE_NUMBER_MAX

_TOKEN_MAX = 1000
# Not a secret: it only lets the core tell its own tokens from garbage. Anyone can make a
# token that passes it, which is why `decode` checks the position's shape as well.
_TAG = b"scriptgen-page-token-v1"


@dataclass(frozen=True, slots=True)
class Number:
    """An integer entry of a position, within `minimum`..`maximum`."""

    minimum: int
    maximum: int

    def holds(self, entry: object) -> bool:
        # bool is an int to Python, but `true` is no number a store wrote.
        return (
            isinstance(entry, int)
            and not isinstance(entry, bool)
            and self.minimum <= entry <= self.maximum
        )


@dataclass(frozen=True, slots=True)
class Text:
    """A string entry of a position (an id or a name)."""

    def holds(self, entry: object) -> bool:
        return isinstance(entry, str)


#: A time in microseconds since the epoch, as the stores keep it (int64, BIGINT).
_TIME: Final = Number(0, 2**63 - 1)
#: Each list's position, by kind: newest-first lists resume before (time, id); episodes
#: after a number (an INTEGER column in PostgreSQL); knowledge after (time, source).
POSITIONS: Final[Mapping[str, tuple[Number | Text, ...]]] = {
    "projects": (_TIME, Text()),
    "episodes": (Number(0, EPISODE_NUMBER_MAX),),
    "generations": (_TIME, Text()),
    "knowledge": (_TIME, Text()),
}


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
    shape = POSITIONS[kind.partition(":")[0]]
    problem = "is not a page token from a previous response of this list"
    if len(token) > _TOKEN_MAX:
        raise invalid(field, problem)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body, _, mac = raw.rpartition(b".")
        if _mac(body).encode() != mac:
            raise ValueError("bad tag")
        token_kind, position = json.loads(body)
    except (ValueError, binascii.Error, TypeError, RecursionError):
        raise invalid(field, problem) from None
    if token_kind != kind or not isinstance(position, list) or len(position) != len(shape):
        raise invalid(field, problem)
    if not all(slot.holds(entry) for slot, entry in zip(shape, position, strict=True)):
        raise invalid(field, problem)
    return position
