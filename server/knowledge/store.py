"""`ChromaKnowledgeBase`: story knowledge of every project in one Chroma collection.

Documents and saved episodes are chunked (server.knowledge.chunking), embedded
with the configured embedder and stored with the tenant and the project id in
their metadata, and with `space`, tenant, project and role in one value; every
read filters on them (retrieval on `space` alone, one selective clause:
records.py), so projects never see each other's knowledge — not even two
tenants' projects of the same id. Every call is for
one tenant: the `tenant` given, else the tenant in scope
(`server.auth.guard.tenant_in_scope`), as in the project store.

Retrieval for a plan (`retrieve`) finds nothing at once for a project without
a single record (no document, no indexed episode) — the usual case for a new
project — without embedding the query or searching (`_holds_nothing`). Else:
1. continuity — the summaries of the project's latest episodes, newest first,
   within a third of the token budget, presented oldest first. Only the latest
   CONTINUITY_CANDIDATES summaries are read with their texts and scored
   (`_latest_summaries`), so what a plan reads and scores does not grow with
   the project's episodes (but for one read of their metadata);
2. relevance — the rest of the budget goes to the best chunks by hybrid score
   (server.knowledge.scoring) among the VECTOR_CANDIDATES nearest chunks and
   the KEYWORD_CANDIDATES nearest of the chunks containing a query term. (The
   nearest of those, not the first Chroma finds: when more chunks contain a
   term, the ones kept are those the vector score favours, so the pool is at
   least as good as any other of that size.)

No embedding is read back from Chroma: every candidate is found by a search
(`ChromaCollection.nearest`) that returns its cosine similarity to the query,
computed by Chroma, which is all scoring needs of the vectors. Reading them
instead (up to 267 records of 1024 floats, as JSON from a Chroma server) took
over half the core's CPU time of a retrieval (scripts/retrieval_costs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final

from scriptgen.v1 import knowledge_pb2, project_pb2

from server.auth.guard import tenant_in_scope
from server.auth.records import DEFAULT_TENANT
from server.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from server.knowledge import records, scoring
from server.knowledge.base import EPISODE_KIND, Passage
from server.knowledge.chroma import (
    ChromaCollection,
    Connect,
    Metadata,
    Record,
    ScoredRecord,
    where_all,
)
from server.knowledge.chunking import DEFAULT_CHUNK_TOKENS, split
from server.knowledge.embedding import Embedder
from server.knowledge.index_retries import IndexRetries, transient
from server.knowledge.text import estimate_tokens, keyword_terms
from server.knowledge.write_batch import MAX_BATCH_RECORDS, GroupWriter
from server.shared_reads import QueuedReads, SharedReads

log = logging.getLogger(__name__)

#: Chunks fetched as vector and as keyword candidates.
VECTOR_CANDIDATES: Final = 40
KEYWORD_CANDIDATES: Final = 200
#: Share of the budget kept for the latest episodes' summaries.
CONTINUITY_SHARE: Final = 1 / 3
#: Episode summaries read (with texts) and scored for continuity, latest first.
#: Enough to fill the continuity share of the plan stage's knowledge budget
#: (server.jobs.story_context.ContextBudget: 1500 tokens, so 500) with the
#: cheapest summary there is: "Episode N" as title and as the only line, 3
#: tokens each, plus PASSAGE_OVERHEAD_TOKENS is 18 tokens, and 500 // 18 = 27.
#: Real summaries (outline, cast, ending) cost far more, so at that budget no
#: more than this ever fit; a larger budget still gets 27 summaries at most.
CONTINUITY_CANDIDATES: Final = 27
#: Candidates scoring below this are noise, whatever the budget.
MIN_SCORE: Final = 0.05
#: Tokens a prompt spends framing each passage (source line, separators).
PASSAGE_OVERHEAD_TOKENS: Final = 12
#: The tenant given to records of schema 1 whose project no longer exists: no
#: tenant has it (tenant ids start with a letter), so nobody sees them.
ORPHANED: Final = ""

#: The reason of the project store's Unavailable (`server.store.records.store_unavailable`).
_STORE_UNAVAILABLE: Final = "STORE_UNAVAILABLE"

#: Projects remembered as empty, at most (then forgotten all at once, and probed again).
EMPTY_PROJECTS_KEPT: Final = 100_000

#: The tenant of the oldest project with an id, None when there is none
#: (`ProjectStore.first_owner`).
Owners = Callable[[str], Awaitable[str | None]]
#: Episode N of a tenant's project as the project store has it, None when it is not saved
#: (any more): read by an indexing retry (`factory.saved_episodes`).
Saved = Callable[[str, str, int], Awaitable[project_pb2.Episode | None]]


def _worth_retrying(error: BaseException) -> bool:
    """An indexing retry's failure that passes: Chroma or the embedding service not reached
    or not in time (`index_retries.transient`), or the project store unavailable."""
    return transient(error) or (
        isinstance(error, Unavailable) and error.reason == _STORE_UNAVAILABLE
    )


def _indexed_fields(episode: project_pb2.Episode) -> project_pb2.Episode:
    """What indexing reads of an episode (and its identity): a waiting retry keeps no
    prompt snapshot, usage or quality report."""
    return project_pb2.Episode(
        name=episode.name,
        number=episode.number,
        title=episode.title,
        outline=episode.outline,
        script=episode.script,
        cast=episode.cast,
        generation=episode.generation,
        create_time=episode.create_time if episode.HasField("create_time") else None,
    )


def passage_cost(passage: Passage) -> int:
    """Estimated tokens a passage takes in a prompt."""
    return estimate_tokens(passage.text) + estimate_tokens(passage.title) + PASSAGE_OVERHEAD_TOKENS


def _passage(record: Record, score: float) -> Passage:
    return Passage(
        source=str(record.metadata.get("source", "")),
        title=str(record.metadata.get("title", "")),
        kind=str(record.metadata.get("kind", "")),
        text=record.text.strip(),
        score=round(score, 4),
    )


def _candidate(record: ScoredRecord) -> scoring.Candidate:
    return scoring.Candidate(record.id, record.text, record.similarity)


def _episode_number(record: Record) -> int:
    return int(record.metadata.get("episode", 0))


def _in_space(tenant: str, project_id: str, role: str) -> dict[str, Any]:
    """A Chroma `where` for the project's records of one role: one clause on `space`."""
    return {"space": records.space(tenant, project_id, role)}


def _in_project(tenant: str, project_id: str) -> dict[str, Any]:
    """A Chroma `where` for every record of the project: one clause on `space`, of any role."""
    return {"space": {"$in": [records.space(tenant, project_id, role) for role in records.ROLES]}}


def _now_micros() -> int:
    return time.time_ns() // 1000


class ChromaKnowledgeBase:
    """Story knowledge in Chroma (embedded or server); implements `KnowledgeStore`."""

    def __init__(
        self,
        connect: Connect,
        embedder: Embedder,
        *,
        collection_prefix: str = "scriptgen",
        max_documents: int = 100,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        timeout_seconds: float = 30.0,
        where: str = "Chroma",
        start_without_chroma: bool = False,
        owners: Owners | None = None,
        saved: Saved | None = None,
        sole_writer: bool = False,
        batch_records: int = MAX_BATCH_RECORDS,
        batch_rest_share: float = 0.0,
    ) -> None:
        self.embedder = embedder
        self.start_without_chroma = start_without_chroma
        self._owners = owners
        self.collection = ChromaCollection(
            connect,
            embedder,
            prefix=collection_prefix,
            timeout_seconds=timeout_seconds,
            where=where,
            adopt=self.adopt_legacy,
        )
        #: Saved episodes whose indexing met Chroma down, indexed again later; `saved` says
        #: whether one still is (None: always indexed).
        self._retries = IndexRetries(_worth_retrying)
        self._saved = saved
        #: Saved episodes' records, written to Chroma in batches.
        self._episodes = GroupWriter(
            self.collection, max_records=batch_records, rest_share=batch_rest_share
        )
        self.max_documents = max_documents
        self.chunk_tokens = chunk_tokens
        # Adds in this core one at a time, so the per-project limit holds exactly here.
        self._adding = asyncio.Lock()
        #: Owners of schema-1 records' projects, found while adopting them.
        self._adopted: dict[str, str] = {}
        #: Whether nothing but this object writes to the collection (embedded Chroma: one
        #: core owns its data dir), so that a project seen empty stays empty until this
        #: object writes to it; with a Chroma server other cores write too.
        self._sole_writer = sole_writer
        #: (tenant, project) pairs known to hold no record at all (only with `sole_writer`).
        self._empty: set[tuple[str, str]] = set()
        #: Writes begun or ended per (tenant, project): an emptiness probe that saw one
        #: of these change while it ran is not remembered.
        self._writes: dict[tuple[str, str], int] = {}
        #: Emptiness probes in flight per (tenant, project, write count when they began).
        self._probes: SharedReads[tuple[str, str, int], bool] = SharedReads()
        #: … and, with a Chroma server, those not begun yet (other cores write too).
        self._queued_probes: QueuedReads[tuple[str, str], bool] = QueuedReads()

    @property
    def waiting_index_retries(self) -> int:
        """Saved episodes waiting to be indexed again (`index_retries`), the one under way too."""
        return len(self._retries)

    async def open(self) -> None:
        try:
            await self.collection.handle()
        except Unavailable:
            if not self.start_without_chroma:
                raise
            # A Chroma server may come up after the core: the first call that needs it connects.
            log.warning("story knowledge: Chroma is not reachable yet; connecting on first use")

    async def close(self) -> None:
        try:
            await self._retries.close()
            await self._episodes.close()
            await self.collection.close()
            await self.embedder.close()
        finally:
            # A close cut short (the core's limit at shutdown) still ends Chroma's pools.
            self.collection.abandon()

    async def ping(self) -> None:
        await self.collection.heartbeat()

    async def adopt_legacy(self, metadata: Metadata) -> Metadata | None:
        """What a record written under an older schema lacks: its tenant (schema 1) and its
        `space` (schemas 1 and 2); None when it lacks nothing.

        Project ids were unique across tenants before records carried one, so such a
        record belongs to the oldest project with its id — the one it was written for
        (a project of that id made later by another tenant is younger). Records of a
        project that is gone are ORPHANED. Without `owners` (a knowledge base with no
        project store) everything is the default tenant's. A record without a role is a
        text chunk (`records.chunk_metadata`'s default).
        """
        change: Metadata = {}
        project = str(metadata.get("project", ""))
        tenant = metadata.get("tenant")
        if tenant is None:
            tenant = change["tenant"] = await self._legacy_owner(project)
        if "space" not in metadata:
            role = str(metadata.get("role", records.TEXT))
            change["space"] = records.space(str(tenant), project, role)
        return change or None

    async def _legacy_owner(self, project: str) -> str:
        """The tenant a schema-1 record of `project` was written for (looked up once)."""
        if self._owners is None:
            return DEFAULT_TENANT
        owner = self._adopted.get(project)
        if owner is None:
            owner = await self._owners(project) or ORPHANED
            self._adopted[project] = owner
        return owner

    # Knowing a project is empty

    @contextlib.contextmanager
    def _writing(self, tenant: str, project_id: str) -> Iterator[None]:
        """Around every write: forget that the project was empty, before and after."""
        key = (tenant, project_id)
        self._writes[key] = self._writes.get(key, 0) + 1
        self._empty.discard(key)
        try:
            yield
        finally:
            self._writes[key] += 1
            self._empty.discard(key)

    async def _holds_nothing(self, tenant: str, project_id: str) -> bool:
        """Whether the project has no record at all: no document, no indexed episode.

        Exact: one Chroma read of at most one record, remembered (with
        `sole_writer`) only when no write to the project began or ended while
        it ran; every write forgets it again (`_writing`). With `sole_writer`,
        a caller that finds a read of the same project in flight, begun with no
        write since, shares its answer: a burst of jobs on one project costs one
        read instead of one each, every one waiting its turn on Chroma's threads.
        With a Chroma server, which other cores write to, a caller shares only a
        read that has not begun on Chroma's threads yet (`QueuedReads`), so it sees
        every commit made before it called.
        """
        key = (tenant, project_id)
        if key in self._empty:
            return True
        writes = self._writes.get(key, 0)
        if not self._sole_writer:
            # Other cores write too: shared only by callers that came before the read began.
            return await self._queued_probes.read(
                key, lambda begin: self._probe(key, writes, on_begin=begin)
            )
        # Shared only by callers that saw the same write count (SharedReads: a task of its
        # own, so one caller's cancellation does not end the others' read).
        return await self._probes.read((*key, writes), lambda: self._probe(key, writes))

    async def _probe(
        self, key: tuple[str, str], writes: int, *, on_begin: Callable[[], None] | None = None
    ) -> bool:
        tenant, project_id = key
        found = await self.collection.get(
            _in_project(tenant, project_id), limit=1, texts=False, on_begin=on_begin
        )
        if found:
            return False
        if self._sole_writer and self._writes.get(key, 0) == writes:
            if len(self._empty) >= EMPTY_PROJECTS_KEPT:
                self._empty.clear()
            self._empty.add(key)
        return True

    # Documents

    async def _catalog(self, tenant: str, project_id: str, **extra: str | int) -> list[Record]:
        return await self.collection.get(
            where_all(
                tenant=tenant, project=project_id, origin=records.KNOWLEDGE, chunk=0, **extra
            ),
            texts=False,
        )

    async def add_document(
        self,
        project_id: str,
        document_id: str,
        document: knowledge_pb2.KnowledgeDocument,
        *,
        tenant: str | None = None,
    ) -> knowledge_pb2.KnowledgeDocument:
        tenant = tenant_in_scope(tenant)
        source = records.document_source(project_id, document_id)
        async with self._adding:
            if await self._catalog(tenant, project_id, source=source):
                raise AlreadyExists(
                    f"knowledge document {source!r} already exists", reason="KNOWLEDGE_EXISTS"
                )
            if len(await self._catalog(tenant, project_id)) >= self.max_documents:
                raise FailedPrecondition(
                    f"project 'projects/{project_id}' already holds {self.max_documents}"
                    " knowledge documents, the most allowed; delete one first",
                    reason="KNOWLEDGE_LIMIT_REACHED",
                )
            kind = knowledge_pb2.KnowledgeKind.Name(document.kind)
            chunks = split(document.text, self.chunk_tokens)
            created = _now_micros()
            vectors = await self.embedder.embed([f"{document.title}\n{c.text}" for c in chunks])
            metadatas = [
                records.chunk_metadata(
                    tenant=tenant,
                    project_id=project_id,
                    origin=records.KNOWLEDGE,
                    source=source,
                    kind=kind,
                    title=document.title,
                    chunk=chunk.index,
                    chunks=len(chunks),
                    characters=len(document.text),
                    created=created,
                )
                for chunk in chunks
            ]
            # Chunk 0 is the catalog entry: written last, a document shows only once whole.
            order = [*range(1, len(chunks)), 0]
            with self._writing(tenant, project_id):
                # Chunks left by an add that failed half-way would otherwise linger.
                await self.collection.delete(
                    where_all(tenant=tenant, project=project_id, source=source)
                )
                await self.collection.upsert(
                    [records.record_id(tenant, source, i) for i in order],
                    [vectors[i] for i in order],
                    [chunks[i].text for i in order],
                    [metadatas[i] for i in order],
                )
        return records.document_from(metadatas[0], document.text)

    async def get_document(
        self, project_id: str, document_id: str, *, tenant: str | None = None
    ) -> knowledge_pb2.KnowledgeDocument:
        source = records.document_source(project_id, document_id)
        found = await self.collection.get(
            where_all(tenant=tenant_in_scope(tenant), project=project_id, source=source)
        )
        found.sort(key=lambda record: int(record.metadata.get("chunk", 0)))
        if not found or int(found[0].metadata.get("chunk", -1)) != 0:
            raise NotFound("knowledge document", source, "KNOWLEDGE_NOT_FOUND")
        return records.document_from(found[0].metadata, "".join(r.text for r in found))

    async def list_documents(
        self,
        project_id: str,
        limit: int,
        after: Sequence[str | int] | None,
        kind: knowledge_pb2.KnowledgeKind.ValueType = knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED,
        *,
        tenant: str | None = None,
    ) -> tuple[list[knowledge_pb2.KnowledgeDocument], list[str | int] | None]:
        extra: dict[str, str | int] = {}
        if kind != knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED:
            extra["kind"] = knowledge_pb2.KnowledgeKind.Name(kind)
        entries = await self._catalog(tenant_in_scope(tenant), project_id, **extra)
        keyed = sorted(
            ((int(r.metadata.get("created", 0)), str(r.metadata.get("source", ""))), r)
            for r in entries
        )
        if after is not None and len(after) == 2:
            position = (int(after[0]), str(after[1]))
            keyed = [item for item in keyed if item[0] > position]
        page = keyed[:limit]
        documents = [records.document_from(record.metadata) for _, record in page]
        more = len(keyed) > limit
        return documents, [page[-1][0][0], page[-1][0][1]] if more and page else None

    async def delete_document(
        self, project_id: str, document_id: str, *, tenant: str | None = None
    ) -> None:
        tenant = tenant_in_scope(tenant)
        source = records.document_source(project_id, document_id)
        if not await self._catalog(tenant, project_id, source=source):
            raise NotFound("knowledge document", source, "KNOWLEDGE_NOT_FOUND")
        await self.collection.delete(where_all(tenant=tenant, project=project_id, source=source))

    async def delete_project(self, project_id: str, *, tenant: str | None = None) -> None:
        owner = (tenant_in_scope(tenant), project_id)
        # Should the delete fail, the project stays: its episodes are still to be indexed.
        with self._retries.taken_out(lambda key: isinstance(key, tuple) and key[:2] == owner):
            await self._episodes.flush()  # an episode of it still queued must not come after
            await self.collection.delete(where_all(tenant=owner[0], project=project_id))

    # Episodes

    async def index_episode(
        self, project_id: str, episode: project_pb2.Episode, *, tenant: str | None = None
    ) -> None:
        """Index a saved episode; when Chroma is unavailable, it is indexed again later in the
        background (`index_retries`) and the Unavailable raised says so."""
        tenant = tenant_in_scope(tenant)
        key = (tenant, project_id, episode.number)
        self._retries.take(lambda pending: pending == key)  # an older try must not come after
        try:
            await self._index_episode(tenant, project_id, episode)
        except Unavailable as error:
            if not self._retries.retryable(error):
                raise
            # With a project store, the retry reads the episode there: nothing is kept but its
            # identity (up to MAX_PENDING of them wait).
            kept = None if self._saved is not None else _indexed_fields(episode)
            retry = functools.partial(self._index_again, tenant, project_id, episode.number, kept)
            if not self._retries.add(key, episode.name or str(key), retry):
                raise
            raise Unavailable(
                f"{error.message}; it is indexed again in the background",
                reason=error.reason,
                retry_after=error.retry_after_seconds,
            ) from error

    async def _index_again(
        self, tenant: str, project_id: str, number: int, kept: project_pb2.Episode | None
    ) -> bool:
        """A retry: make story knowledge hold episode `number` as the project store has it now;
        whether it is still saved. Another replica may have deleted it, or its project,
        meanwhile; it deletes an episode's knowledge before the episode, so the store is read
        again once this has written, and records written for an episode gone by then are taken
        out again (as are those a try before this one wrote, if it got that far). Without a
        project store (`saved` None) the copy `kept` is indexed."""
        if self._saved is None:
            assert kept is not None
            await self._index_episode(tenant, project_id, kept)
            return True
        episode = await self._saved(tenant, project_id, number)
        if episode is None:
            await self._forget_source(tenant, project_id, number)
            return False
        await self._index_episode(tenant, project_id, episode)
        still = await self._saved(tenant, project_id, number)
        if still is None:
            await self._forget_source(tenant, project_id, number)
            return False
        if still.generation != episode.generation:
            await self._index_episode(tenant, project_id, still)  # the number saved anew
        return True

    async def _forget_source(self, tenant: str, project_id: str, number: int) -> None:
        """Take an episode's records out, in turn with the other writes of episodes (a
        replacement by nothing: `GroupWriter` deletes what the source held)."""
        source = records.episode_source(project_id, number)
        with self._writing(tenant, project_id):
            await self._episodes.replace(
                source, {"tenant": tenant, "project": project_id}, [], [], [], []
            )

    async def _index_episode(
        self, tenant: str, project_id: str, episode: project_pb2.Episode
    ) -> None:
        source = records.episode_source(project_id, episode.number)
        title = records.episode_title(episode)
        chunks = split(episode.script, self.chunk_tokens)
        summary = records.episode_summary(episode)
        texts = [summary, *(chunk.text for chunk in chunks)]
        vectors = await self.embedder.embed([summary, *(f"{title}\n{c.text}" for c in chunks)])
        created = (
            episode.create_time.ToMicroseconds()
            if episode.HasField("create_time")
            else _now_micros()
        )

        def metadata(chunk: int, role: str) -> Metadata:
            return records.chunk_metadata(
                tenant=tenant,
                project_id=project_id,
                origin=records.EPISODE,
                source=source,
                kind=EPISODE_KIND,
                title=title,
                chunk=chunk,
                chunks=len(chunks),
                characters=len(episode.script),
                created=created,
                role=role,
                episode=episode.number,
            )

        metadatas = [
            metadata(0, records.SUMMARY),
            *(metadata(c.index, records.TEXT) for c in chunks),
        ]
        ids = [
            records.record_id(tenant, source, "summary"),
            *(records.record_id(tenant, source, c.index) for c in chunks),
        ]
        with self._writing(tenant, project_id):
            # With the other episodes being indexed now, in one Chroma write (write_batch.py).
            await self._episodes.replace(
                source,
                {"tenant": tenant, "project": project_id},
                ids,
                vectors,
                texts,
                metadatas,
            )

    async def forget_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> None:
        source = records.episode_source(project_id, number)
        key = (tenant_in_scope(tenant), project_id, number)
        # Should the delete fail, the episode stays saved: it is still to be indexed.
        with self._retries.taken_out(lambda pending: pending == key):
            await self._episodes.flush()  # an index of it still queued must not come after
            await self.collection.delete(
                where_all(tenant=key[0], project=project_id, source=source)
            )

    # Retrieval

    async def _latest_summaries(
        self, tenant: str, project_id: str, query_vector: Sequence[float]
    ) -> list[ScoredRecord]:
        """The summaries of the project's latest CONTINUITY_CANDIDATES episodes, newest first.

        Two reads: every summary's metadata alone (no text), then the latest
        ones' texts and similarities to the query: a search restricted to
        their ids, for all of them. Both filter on the summaries' `space`
        alone: on (tenant, project, role), Chroma weighed each clause against
        every project's records, and the search took 34 ms with one project of
        140 episodes in the collection and 96 to 140 ms with five (wall time)
        (BENCHMARKS.md, session 21). The filter stays in the search (the ids
        alone would do) because Chroma refuses ids alone when one of them is
        gone ("Error finding id"), and an episode may be forgotten between the
        two reads.
        """
        where = _in_space(tenant, project_id, records.SUMMARY)
        catalog = await self.collection.get(where, texts=False)
        latest = sorted(catalog, key=_episode_number, reverse=True)[:CONTINUITY_CANDIDATES]
        found = await self.collection.nearest(
            query_vector, where, len(latest), ids=[record.id for record in latest]
        )
        # An episode forgotten between the two reads is simply left out.
        return sorted(found, key=_episode_number, reverse=True)

    async def retrieve(
        self, project_id: str, query: str, *, token_budget: int, tenant: str | None = None
    ) -> list[Passage]:
        if token_budget <= 0:
            return []
        tenant = tenant_in_scope(tenant)
        if await self._holds_nothing(tenant, project_id):
            return []
        (query_vector,) = await self.embedder.embed([query])
        summaries = await self._latest_summaries(tenant, project_id, query_vector)
        texts = _in_space(tenant, project_id, records.TEXT)
        candidates = {
            record.id: record
            for record in await self.collection.nearest(query_vector, texts, VECTOR_CANDIDATES)
        }
        terms = keyword_terms(query)
        if terms:
            for record in await self.collection.nearest(
                query_vector,
                texts,
                KEYWORD_CANDIDATES,
                # Terms are \w+ runs: nothing in them needs escaping in a regular expression.
                where_document={"$regex": "(?i)(" + "|".join(terms) + ")"},
            ):
                candidates.setdefault(record.id, record)

        # 1. Continuity: the latest episodes first, within their share of the budget.
        summary_scores = scoring.hybrid_scores(terms, [_candidate(r) for r in summaries])
        continuity = [_passage(r, s) for r, s in zip(summaries, summary_scores, strict=True)]
        kept = scoring.pack(
            [passage_cost(p) for p in continuity], int(token_budget * CONTINUITY_SHARE)
        )
        chosen = [continuity[i] for i in reversed(kept)]
        spent = sum(passage_cost(p) for p in chosen)

        # 2. Relevance: the best chunks for the rest of the budget.
        pool = list(candidates.values())
        scores = scoring.hybrid_scores(terms, [_candidate(r) for r in pool])
        ranked = sorted(
            (
                (score, record.id, record)
                for score, record in zip(scores, pool, strict=True)
                if score >= MIN_SCORE
            ),
            key=lambda item: (-item[0], item[1]),
        )
        relevant = [_passage(record, score) for score, _, record in ranked]
        for index in scoring.pack([passage_cost(p) for p in relevant], token_budget - spent):
            chosen.append(relevant[index])
        return chosen
