"""Which stores a backup covers, read from the core's own configuration.

The backup command takes the same flags and `SCRIPTGEN_*` variables as
`scriptgen server`, so it reaches exactly the stores the core uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import CoreConfig
from server.knowledge.chroma import close_client, embedded_client, server_client
from server.knowledge.factory import CHROMA_DIRECTORY
from server.store.factory import sqlite_path


@dataclass(frozen=True, slots=True)
class Stores:
    """Where each store lives."""

    #: The data dir; embedded stores live in it, and restore creates it.
    data_dir: Path
    #: The SQLite file, or None when the project store is PostgreSQL.
    sqlite_path: Path | None
    #: The PostgreSQL URL, or empty for SQLite.
    postgres_url: str
    #: A Chroma server URL, or empty for embedded Chroma in `data_dir/chroma`.
    chroma_url: str
    #: Scriptgen's collections are `{prefix}-…`.
    chroma_prefix: str
    #: Redis URL, or empty when jobs and events live in memory (nothing to back up).
    redis_url: str
    #: Only keys under this prefix are Scriptgen's.
    redis_prefix: str

    @classmethod
    def from_config(cls, config: CoreConfig) -> Stores:
        path = sqlite_path(config.database_url, config.data_dir)
        return cls(
            data_dir=config.data_dir,
            sqlite_path=path,
            postgres_url="" if path is not None else config.database_url.strip(),
            chroma_url=config.knowledge.chroma_url,
            chroma_prefix=config.knowledge.collection_prefix,
            redis_url=config.redis_url,
            redis_prefix=config.redis_key_prefix,
        )

    @property
    def chroma_path(self) -> Path:
        """Where embedded Chroma keeps its files."""
        return self.data_dir / CHROMA_DIRECTORY


@contextmanager
def chroma_client(url: str, path: Path) -> Iterator[Any]:
    """A Chroma client (the server at `url`, else embedded at `path`), closed on exit."""
    client = (server_client(url) if url else embedded_client(path))()
    try:
        yield client
    finally:
        close_client(client)
