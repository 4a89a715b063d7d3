"""The embedder interface: text in, fixed-length vectors out, under a stable name.

A collection in Chroma holds the vectors of exactly one embedder: its `name`
and `dimension` are part of the collection's name and stored in its metadata,
so switching embedders starts a new collection instead of mixing vectors that
mean different things.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Embedder(Protocol):
    """Turns texts into vectors of `dimension` floats."""

    @property
    def name(self) -> str:
        """A stable identifier of the model and its settings, e.g. `hashing-ngram-v1`."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        """One vector per text, in order. Raises Unavailable when a remote model is down."""
        ...

    async def close(self) -> None:
        """Release clients and models."""
        ...
