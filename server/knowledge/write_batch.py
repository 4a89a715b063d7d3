"""Group commit for saved episodes' knowledge: replacements waiting together go to Chroma as one.

Indexing an episode replaces its records: upsert the new records, then delete
what its source held that they did not overwrite. In that order an upsert that
Chroma refuses leaves the source's old records whole, where a delete made first
had already taken them; and a reader meets the old records, or the new ones
(beside old ones until their delete, or for good if that delete fails), never
none. A job indexes a newly numbered episode, whose source holds nothing; the order
matters for a source indexed again, as an indexing retry may (`index_retries`), and a
replacement by no records deletes what its source holds (a retry's episode found
deleted). Chroma pays a fixed price per write, whatever it
carries (embedded: ~12 ms of CPU per upsert, with a delete ~15 ms; a Chroma
server: a request each), so 200 episodes finishing together cost ~30 ms of CPU
each, one after another on Chroma's threads, and the last waited seconds for
its `completed` event. `GroupWriter` writes one batch at a time: a replacement
that finds no write in progress goes at once, and those that arrive during a
write go together in the next (one read of what their sources hold, one upsert of
all their records, then one delete by id of the records read that the upsert did not
overwrite). 200 episodes indexed
at once into embedded Chroma cost ~24 ms of CPU each written one by one, ~10 ms
at 32 records a write, ~6.5 ms at 256 (scripts/index_costs.py); with a Chroma
server, the server's CPU for a run of `sse-openai-200` fell from 6.4 to 2.6 s
and its last `completed` came 1.2 s after its last token instead of 4.3 s
(BENCHMARKS.md, "Session 18").

A batch holds each source once (a second replacement of a source waits for the
next batch, so they are written in the order they came) and at most
`max_records` records (a lone replacement may hold more). When a batch's write
fails because Chroma could not be reached or timed out, each of its callers
gets that error; any other failure is a fault of one of them, so each is then
written alone and gets its own outcome. A caller cancelled before its batch
was taken is left out. With `rest_share` (embedded Chroma, whose writes hold
the GIL) the writer waits that share of a write's time (at most
`MAX_REST_SECONDS`, and not after a failed write) before the next one.
What a replacement replaces is found by its source alone (`source` `$in` the
batch's sources, one selective clause), then kept to the records that carry the
replacement's owner (its tenant and project) and deleted by id. A delete that
filtered on tenant, project and source, one `$and` per source under an `$or`,
weighed each clause against the whole collection and grew with every project in
it (BENCHMARKS.md, session 22). A new episode's source holds nothing, so its
batch deletes nothing. The read also brings back other tenants' records of the
same source names (their projects of the same id), so it goes READ_PAGE_RECORDS
at a time: Chroma refuses a read of more than ~32,000.
`flush` waits until everything queued so far is written:
deletes that must come after a queued replacement (forgetting an episode,
deleting a project) call it first. A caller cancelled while its batch is being
written leaves when that write ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from server.errors import Unavailable
from server.knowledge.chroma import ChromaCollection, Metadata, MetadataValue
from server.knowledge.index_retries import transient

log = logging.getLogger(__name__)

#: Records one batch holds at most with a Chroma server (an episode of ~600 tokens makes 6).
MAX_BATCH_RECORDS: Final = 256
#: … with embedded Chroma, whose upsert holds the GIL throughout (RELIABILITY.md, Known gap
#: 9): a write of 32 records stops the event loop ~50 ms here, as one episode's upsert of 12
#: records did in session 3; a write of 256, ~280 ms.
EMBEDDED_BATCH_RECORDS: Final = 32
#: With embedded Chroma, the writer rests this share of each write's time before the next:
#: the event loop keeps at least half the time while a burst of episodes is indexed, so the
#: streams go on and the saves of the episodes behind come through to fill the next batches.
EMBEDDED_REST_SHARE: Final = 1.0
#: The longest rest, whatever the write took (a slow write must not hold the next one long).
MAX_REST_SECONDS: Final = 1.0
#: Records read at most per page when a batch looks up what its sources hold: Chroma refuses
#: a read of more than ~32,000 records ("too many SQL variables", embedded and server alike).
READ_PAGE_RECORDS: Final = 5000


@dataclass(slots=True, eq=False)
class Replacement:
    """The records of one source, replacing whatever it holds."""

    source: str
    #: The metadata a record of `source` carries besides it to be replaced (its tenant and
    #: project): another tenant's records of a same-named source are left alone.
    owner: dict[str, MetadataValue]
    ids: list[str]
    embeddings: list[Sequence[float]]
    texts: list[str]
    metadatas: list[Metadata]
    #: Settled by the writer only (or cancelled when its caller left before the write).
    done: asyncio.Future[None]
    #: Whether the caller was cancelled before its batch was taken.
    left: bool = False


class GroupWriter:
    """Replacements in a collection, written a batch at a time (see the module docstring)."""

    def __init__(
        self,
        collection: ChromaCollection,
        *,
        max_records: int = MAX_BATCH_RECORDS,
        rest_share: float = 0.0,
        read_page: int = READ_PAGE_RECORDS,
    ) -> None:
        self._collection = collection
        self._max_records = max_records
        self._read_page = max(1, read_page)
        self._rest_share = rest_share
        self._waiting: deque[Replacement] = deque()
        self._writing: list[Replacement] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        #: Chroma writes made, for tests and the curious.
        self.writes = 0

    @property
    def in_progress(self) -> int:
        """Replacements in the write in progress (0: none)."""
        return len(self._writing)

    async def replace(
        self,
        source: str,
        owner: Mapping[str, MetadataValue],
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        """Write the records, then delete the other records of `source` that carry `owner`, in
        a batch; raises what its write raised (Unavailable when Chroma could not be reached),
        and then `source` holds what it held before, or some or all of the new records
        beside old ones."""
        if self._closed:
            raise Unavailable("story knowledge is closed", reason="KNOWLEDGE_UNAVAILABLE")
        loop = asyncio.get_running_loop()
        item = Replacement(
            source,
            dict(owner),
            list(ids),
            list(embeddings),
            list(texts),
            list(metadatas),
            loop.create_future(),
        )
        self._waiting.append(item)
        if self._writer is None:
            # A context of its own: the writer serves every job, not the one that started it.
            self._writer = loop.create_task(
                self._drain(), name="knowledge group writer", context=contextvars.Context()
            )
        try:
            await asyncio.shield(item.done)
        except asyncio.CancelledError:
            if not item.done.done():
                if item in self._writing:
                    # Its write goes on: leave once it has ended, so that the caller's hold on
                    # the project (and a flush) never ends before the records are in.
                    await asyncio.wait([item.done])
                else:
                    item.left = True  # not written; the writer drops it
            if item.done.done() and not item.done.cancelled():
                item.done.exception()  # retrieved: the caller is gone
            raise

    async def flush(self) -> None:
        """Wait until every replacement queued before this call is written (or has failed)."""
        pending = [item.done for item in (*self._writing, *self._waiting)]
        if pending:
            # asyncio.wait, not gather: a cancelled flush must not cancel the callers' futures.
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Refuse new replacements and fail those not yet taken; the write in progress ends."""
        self._closed = True
        closed = Unavailable("story knowledge is closed", reason="KNOWLEDGE_UNAVAILABLE")
        while self._waiting:
            _settle(self._waiting.popleft(), closed)
        writer = self._writer
        if writer is not None:
            await asyncio.wait([writer])

    async def _drain(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            while batch := self._take():
                self._writing = batch
                began = loop.time()
                written = await self._write_batch(batch)
                self._writing = []
                if written and self._rest_share > 0 and self._waiting and not self._closed:
                    # Only after a write that went through: a failed one may have waited out
                    # a timeout, which is no measure of the loop's time it took.
                    rest = (loop.time() - began) * self._rest_share
                    await asyncio.sleep(min(rest, MAX_REST_SECONDS))
        except BaseException:
            # Cut short (a Chroma call cancelled under it as the knowledge base was abandoned
            # at shutdown, or the writer itself cancelled): its callers get an error rather
            # than a wait for ever.
            cut = Unavailable(
                "story knowledge's write was cut short", reason="KNOWLEDGE_UNAVAILABLE"
            )
            for item in (*self._writing, *self._waiting):
                _settle(item, cut)
            self._waiting.clear()
            raise
        finally:
            self._writer = None
            self._writing = []

    def _take(self) -> list[Replacement]:
        """The next batch, in order of arrival: each source once, within the record limit."""
        batch: list[Replacement] = []
        later: list[Replacement] = []
        sources: set[str] = set()
        records = 0
        while self._waiting:
            item = self._waiting[0]
            if batch and records + len(item.ids) > self._max_records:
                break
            self._waiting.popleft()
            if item.left or item.done.done():
                item.done.cancel()  # its caller was cancelled before the write: no one waits
                continue
            if item.source in sources:
                later.append(item)  # one upsert must not hold an id twice; the next batch
                continue
            batch.append(item)
            sources.add(item.source)
            records += len(item.ids)
        self._waiting.extendleft(reversed(later))
        return batch

    async def _write_batch(self, batch: list[Replacement]) -> bool:
        """Write a batch and settle its callers; whether it was written as one."""
        try:
            await self._write(batch)
        except Exception as error:
            # Chroma not reached, or not in time: each replacement would meet that alone too.
            if len(batch) == 1 or transient(error):
                for item in batch:
                    _settle(item, error)
                return False
            log.warning(
                "story knowledge: a write of %d replacements failed (%s); writing each alone",
                len(batch),
                error,
            )
            for item in batch:
                try:
                    await self._write([item])
                except Exception as alone:
                    _settle(item, alone)
                else:
                    _settle(item, None)
            return False
        for item in batch:
            _settle(item, None)
        return True

    async def _write(self, batch: list[Replacement]) -> None:
        self.writes += 1
        held = await self._replaced(batch)
        ids = [record for item in batch for record in item.ids]
        if ids:
            await self._collection.upsert(
                ids,
                [vector for item in batch for vector in item.embeddings],
                [text for item in batch for text in item.texts],
                [metadata for item in batch for metadata in item.metadatas],
            )
        # Only once the new records are in; those the upsert overwrote are the new ones now.
        written = set(ids)
        stale = [record for record in held if record not in written]
        if stale:
            await self._collection.delete_ids(stale)

    async def _replaced(self, batch: list[Replacement]) -> list[str]:
        """The ids of the records the batch replaces: its sources' records that carry the
        owner of their source's replacement (a batch holds each source once)."""
        owners = {item.source: item.owner for item in batch}
        sources = list(owners)
        where = {"source": sources[0]} if len(sources) == 1 else {"source": {"$in": sources}}
        stale: list[str] = []
        offset = 0
        while True:
            page = await self._collection.get(
                where, texts=False, limit=self._read_page, offset=offset
            )
            stale.extend(record.id for record in page if _owned(record.metadata, owners))
            if len(page) < self._read_page:
                return stale
            offset += len(page)


def _owned(
    metadata: Mapping[str, MetadataValue], owners: Mapping[str, Mapping[str, MetadataValue]]
) -> bool:
    owner = owners.get(str(metadata.get("source")))
    return owner is not None and all(metadata.get(key) == value for key, value in owner.items())


def _settle(item: Replacement, error: BaseException | None) -> None:
    if item.done.done():
        return
    if item.left:
        item.done.cancel()  # nobody waits for it
        return
    if error is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(error)
