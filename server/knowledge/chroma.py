"""Chroma access: one collection per embedder, blocking calls run off the event loop.

Chroma's Python client is synchronous (embedded `PersistentClient` and
`HttpClient` alike), so every call runs in a small thread pool of its own with
a timeout; connection failures and timeouts become UNAVAILABLE
(KNOWLEDGE_UNAVAILABLE), and the next call reconnects. Telemetry is off and no
embedding function is ever given to Chroma, so it never downloads a model:
vectors always come from our embedder.

Vectors only go to Chroma, never back: reads return texts and metadata, and
searches (`nearest`) the similarity Chroma computes for each record. Parsing
the records' vectors from a Chroma server's JSON would cost the core more CPU
than all the rest of a retrieval (scripts/retrieval_costs.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import chromadb
import httpx
import numpy
from chromadb.api.fastapi import FastAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings
from chromadb.errors import ChromaError

from server.errors import Unavailable
from server.knowledge.embedding import Embedder

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Metadata values Chroma stores.
MetadataValue = str | int | float | bool
Metadata = dict[str, MetadataValue]
#: Opens a Chroma client (blocking).
Connect = Callable[[], Any]
#: Brings one record of an older collection up to this schema: the metadata keys
#: to add (Chroma merges them in), or None when the record needs nothing.
Adopt = Callable[[Metadata], Awaitable[Metadata | None]]

#: The collection layout (its `schema` metadata): 1 — records keyed by project;
#: 2 — by tenant and project (every record's metadata has `tenant`); 3 — and each has
#: `space`, its tenant, project and role in one value (`records.space`).
_SCHEMA_VERSION: Final = 3
_UPGRADE_PAGE: Final = 1000
#: Passes over a collection's records at most, per start, until one finds nothing to adopt.
_UPGRADE_PASSES: Final = 5
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")
_OUTAGES: Final = (httpx.HTTPError, ChromaError, OSError, TimeoutError, ValueError)


def _settings() -> Settings:
    return Settings(anonymized_telemetry=False, allow_reset=False)


def embedded_client(path: Path) -> Connect:
    """Embedded Chroma persisting under `path`."""

    def connect() -> Any:
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=_settings())

    return connect


def server_client(url: str) -> Connect:
    """A Chroma server (`chroma run`) at `http(s)://host:port`."""
    parts = urlsplit(url)
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 8000)
    host = parts.hostname or "localhost"

    def connect() -> Any:
        return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_settings())

    return connect


def collection_name(prefix: str, embedder: Embedder) -> str:
    """`{prefix}-{embedder}-{dimension}` in the characters Chroma allows."""
    raw = f"{prefix}-{embedder.name}-{embedder.dimension}"
    return _NOT_NAME.sub("-", raw).strip("-._")


@dataclass(frozen=True, slots=True)
class Record:
    """One stored chunk."""

    id: str
    text: str
    metadata: Mapping[str, MetadataValue]


@dataclass(frozen=True, slots=True)
class ScoredRecord(Record):
    """A stored chunk found by a search, with its similarity to the query."""

    #: Cosine similarity of the record's and the query's embeddings, -1..1: Chroma's
    #: distance in a cosine collection is 1 - similarity.
    similarity: float


def _column(result: Mapping[str, Any], key: str, nested: bool) -> list[Any] | None:
    """One column of a Chroma get (flat lists) or single-query result (one list per query)."""
    value = result.get(key)
    if value is None:
        return None
    return list(value[0]) if nested else list(value)


def _records(result: Mapping[str, Any]) -> list[Record]:
    """Records from a Chroma get result."""
    ids = _column(result, "ids", False) or []
    texts = _column(result, "documents", False) or [""] * len(ids)
    metadatas = _column(result, "metadatas", False) or [{}] * len(ids)
    return [
        Record(id=str(record_id), text=str(text or ""), metadata=dict(metadata or {}))
        for record_id, text, metadata in zip(ids, texts, metadatas, strict=True)
    ]


def _scored(result: Mapping[str, Any]) -> list[ScoredRecord]:
    """Records from a Chroma query result of one query embedding, nearest first."""
    ids = _column(result, "ids", True) or []
    texts = _column(result, "documents", True) or [""] * len(ids)
    metadatas = _column(result, "metadatas", True) or [{}] * len(ids)
    distances = _column(result, "distances", True) or []
    return [
        ScoredRecord(
            id=str(record_id),
            text=str(text or ""),
            metadata=dict(metadata or {}),
            similarity=1.0 - float(distance),
        )
        for record_id, text, metadata, distance in zip(
            ids, texts, metadatas, distances, strict=True
        )
    ]


class ChromaCollection:
    """The collection of one embedder, opened lazily and reopened after a failure."""

    def __init__(
        self,
        connect: Connect,
        embedder: Embedder,
        *,
        prefix: str = "scriptgen",
        timeout_seconds: float = 30.0,
        where: str = "Chroma",
        adopt: Adopt | None = None,
    ) -> None:
        self._connect = connect
        self._adopt = adopt
        self._embedder = embedder
        self.name = collection_name(prefix, embedder)
        self._timeout = timeout_seconds
        self._where = where
        self._executor: ThreadPoolExecutor | None = None
        #: The readiness probe's own thread: under load the jobs' calls queue on the others.
        self._probe_executor: ThreadPoolExecutor | None = None
        self._client: Any = None
        self._collection: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _run(
        self,
        function: Callable[..., T],
        *args: Any,
        probe: bool = False,
        on_begin: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """`function` on a worker thread; `probe`: on the probe's own thread, so a
        readiness probe does not queue behind the jobs' reads and writes. `on_begin` is
        called on that thread just before `function`, once the call has its thread."""
        if self._closed:  # no new pool once closed: its threads would hold up the exit
            raise Unavailable("story knowledge is closed", reason="KNOWLEDGE_UNAVAILABLE")
        if probe:
            if self._probe_executor is None:
                self._probe_executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="chroma-probe"
                )
            executor = self._probe_executor
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="chroma")
            executor = self._executor
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        if on_begin is not None:
            call = functools.partial(_begin_then, on_begin, call)
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for returns the result when a
            # cancellation comes as the call returns, and a cancelled job would go on.
            async with asyncio.timeout(self._timeout):
                return await loop.run_in_executor(executor, call)
        except _OUTAGES as error:
            # Reopen on the next call: the server may have restarted or lost the collection.
            self._collection = None
            log.warning("story knowledge: %s failed: %s", self._where, error)
            raise Unavailable(
                f"story knowledge is unavailable: {self._where} did not answer",
                reason="KNOWLEDGE_UNAVAILABLE",
                retry_after=1.0,
            ) from error

    async def handle(self) -> Any:
        """The Chroma collection, connecting first if needed."""
        if self._closed:
            raise Unavailable("story knowledge is closed", reason="KNOWLEDGE_UNAVAILABLE")
        collection = self._collection
        if collection is not None:
            return collection
        async with self._opening:
            if self._collection is None:
                if self._client is None:
                    self._client = await self._run(self._connect)
                collection = await self._run(self._open_collection, self._client)
                await self._upgrade(collection)
                self._collection = collection
            return self._collection

    async def _upgrade(self, collection: Any) -> None:
        """Bring the records of a collection of an older schema up to this one, once.

        Pages of records are read by offset and each page's changes written at once
        (memory stays one page's, whatever the collection's size). Records deleted
        meanwhile (by a core still on the old schema, sharing a Chroma server) shift
        the offsets and can make a pass skip records, so passes repeat until one finds
        nothing to change; only then is the schema marked. Nothing is served from the
        collection until this is done; an outage half-way leaves it at its old schema,
        and the next call picks up again (records already adopted are left alone), as
        does the next start when _UPGRADE_PASSES passes all still found changes.
        """
        stored = dict(collection.metadata or {})
        if self._adopt is None or int(stored.get("schema", 1)) >= _SCHEMA_VERSION:
            return
        adopted = 0
        for _ in range(_UPGRADE_PASSES):
            changed = await self._upgrade_pass(collection, self._adopt)
            adopted += changed
            if not changed:
                break
        else:
            log.warning(
                "story knowledge: collection %r: records still changing after %d upgrade"
                " passes (%d records adopted); the next start goes on",
                self.name,
                _UPGRADE_PASSES,
                adopted,
            )
            return
        await self._run(collection.modify, metadata={**stored, "schema": _SCHEMA_VERSION})
        log.info(
            "story knowledge: collection %r upgraded to schema %d (%d records adopted)",
            self.name,
            _SCHEMA_VERSION,
            adopted,
        )

    async def _upgrade_pass(self, collection: Any, adopt: Adopt) -> int:
        """One pass over the collection's records, adopting each page's as it is read;
        how many records were changed."""
        changed = 0
        offset = 0
        while True:
            page = await self._run(
                collection.get, include=["metadatas"], limit=_UPGRADE_PAGE, offset=offset
            )
            found = list(page["ids"])
            if not found:
                return changed
            ids: list[str] = []
            changes: list[Metadata] = []
            for record_id, metadata in zip(found, page["metadatas"] or [], strict=True):
                change = await adopt(dict(metadata or {}))
                if change is not None:
                    ids.append(str(record_id))
                    changes.append(change)
            if ids:
                # Chroma merges the keys into each record's metadata; the order is unchanged.
                await self._run(collection.update, ids=ids, metadatas=changes)
                changed += len(ids)
            offset += len(found)

    def _open_collection(self, client: Any) -> Any:
        expected: Metadata = {
            "embedder": self._embedder.name,
            "dimension": self._embedder.dimension,
            "schema": _SCHEMA_VERSION,
        }
        collection = client.get_or_create_collection(
            self.name,
            embedding_function=None,
            metadata=expected,
            configuration={"hnsw": {"space": "cosine"}},
        )
        stored = dict(collection.metadata or {})
        found = (stored.get("embedder"), stored.get("dimension"))
        if found != (self._embedder.name, self._embedder.dimension):
            # Never mix vectors of two embedders in one collection.
            raise RuntimeError(
                f"Chroma collection {self.name!r} holds vectors of {found[0]!r}"
                f" ({found[1]} dimensions), not of {self._embedder.name!r}"
                f" ({self._embedder.dimension}); choose another collection prefix"
            )
        return collection

    async def heartbeat(self) -> None:
        """Raise Unavailable unless Chroma answers (not waiting behind the jobs' calls)."""
        await self.handle()
        await self._run(self._client.heartbeat, probe=True)

    async def get(
        self,
        where: Mapping[str, Any],
        *,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        texts: bool = True,
        on_begin: Callable[[], None] | None = None,
    ) -> list[Record]:
        """Records matching the filters (no particular order), without their embeddings.

        `ids`, when given, narrows `where` to those records (ids matching `where`
        only; an empty list finds nothing). `limit` and `offset` page through them
        (Chroma's order is stable while nothing is written). `texts=False` reads
        metadata only. `on_begin` is called on Chroma's thread as the read begins.
        """
        if ids is not None and not ids:
            return []
        collection = await self.handle()
        result = await self._run(
            collection.get,
            on_begin=on_begin,
            ids=list(ids) if ids is not None else None,
            where=dict(where),
            limit=limit,
            offset=offset,
            include=["metadatas", *(["documents"] if texts else [])],
        )
        return _records(result)

    async def nearest(
        self,
        embedding: Sequence[float],
        where: Mapping[str, Any],
        count: int,
        *,
        ids: Sequence[str] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> list[ScoredRecord]:
        """Up to `count` records matching the filters nearest to `embedding`, nearest first.

        Each comes with its text and its similarity to `embedding`, computed by
        Chroma; never with its embedding. `ids` and `where_document` narrow
        `where` as in `get` (an empty `ids` finds nothing). When fewer records
        than `count` match, those are returned: chromadb 1.5 answers with what
        there is, without a warning (tests/server/knowledge/test_retrieval_similarity.py).
        """
        if count <= 0 or (ids is not None and not ids):
            return []
        collection = await self.handle()
        result = await self._run(
            collection.query,
            query_embeddings=[list(embedding)],
            n_results=count,
            ids=list(ids) if ids is not None else None,
            where=dict(where),
            where_document=dict(where_document) if where_document else None,
            include=["metadatas", "documents", "distances"],
        )
        return _scored(result)

    async def upsert(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        """Write records, in batches Chroma accepts."""
        collection = await self.handle()
        batch = max(1, min(500, await self._run(self._client.get_max_batch_size)))
        for start in range(0, len(ids), batch):
            end = start + batch
            await self._run(
                collection.upsert,
                ids=list(ids[start:end]),
                # One float32 matrix (what Chroma stores), not a list of float objects per value.
                embeddings=numpy.array(embeddings[start:end], dtype=numpy.float32),
                documents=list(texts[start:end]),
                metadatas=list(metadatas[start:end]),
            )

    async def delete(self, where: Mapping[str, Any]) -> None:
        """Delete every record matching `where`."""
        collection = await self.handle()
        await self._run(collection.delete, where=dict(where))

    async def delete_ids(self, ids: Sequence[str]) -> None:
        """Delete the records of these ids (those that are gone already are no error)."""
        if not ids:
            return
        collection = await self.handle()
        await self._run(collection.delete, ids=list(ids))

    async def close(self) -> None:
        """Close the client and the thread pools."""
        self._closed = True
        client, self._client, self._collection = self._client, None, None
        executor = self._executor
        try:
            if client is not None and executor is not None:
                try:
                    async with asyncio.timeout(self._timeout):
                        await asyncio.get_running_loop().run_in_executor(
                            executor, close_client, client
                        )
                except (*_OUTAGES, RuntimeError):
                    log.warning("story knowledge: closing the Chroma client failed", exc_info=True)
        finally:
            self.abandon()  # also when the close itself is cut short

    def abandon(self) -> None:
        """Take no more calls and drop the queued ones, without waiting for any: a call
        stuck on a dead server must not hold up shutdown."""
        self._closed = True
        pools = (self._executor, self._probe_executor)
        self._executor = self._probe_executor = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def _begin_then(on_begin: Callable[[], None], call: Callable[[], T]) -> T:
    on_begin()
    return call()


def close_client(client: Any) -> None:
    """Close a Chroma client, and for an HTTP client every connection it opened.

    chromadb 1.5 gives each HTTP client "systems" of its own (one more for its
    admin client, one it registers and never releases) and stops them on close
    without closing their HTTP connections; they are closed here. Embedded
    clients share one reference-counted system per folder: `close` is enough.
    """
    settings = client.get_settings()
    http = settings.chroma_api_impl == "chromadb.api.fastapi.FastAPI"
    registry = SharedSystemClient._identifier_to_system
    # Each connect() builds its own Settings, so identity finds this client's systems only.
    systems = {key: system for key, system in registry.items() if system.settings is settings}
    client.close()
    if not http:
        return
    for key, system in systems.items():
        registry.pop(key, None)
        for component in system.components():
            if isinstance(component, FastAPI):
                component._session.close()


def where_all(**conditions: MetadataValue) -> dict[str, Any]:
    """A Chroma `where` requiring every condition (Chroma wants `$and` for more than one)."""
    clauses = [{key: value} for key, value in conditions.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
