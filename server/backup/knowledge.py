"""Story knowledge in Chroma: every record of every Scriptgen collection, and its settings.

Records are written one JSON object per line (`knowledge.jsonl`: collection,
id, document, metadata, embedding); the manifest keeps, per collection, its
metadata (embedder name and dimension), its HNSW configuration, its count, a
digest per record, and a probe: the ids a similarity query returned when the
backup was made, asked again after every restore. All calls here block; the
callers run them in a thread.

Memory stays bounded by a page of records (`_PAGE`), whatever the size of a
collection: records are written, read back and compared a page at a time,
and only the probe's pool of vectors (`_PROBE_POOL`) is kept. What grows with
the corpus is what the manifest holds anyway: an id and a digest per record.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy

from server.backup.errors import BackupError, problems_of
from server.backup.manifest import digest

KNOWLEDGE_FILE: Final = "knowledge.jsonl"
_PAGE: Final = 500
_PROBE_SIZE: Final = 5
#: The probe looks for neighbours among this many records.
_PROBE_POOL: Final = 256
#: HNSW settings a collection is created with again on restore.
_HNSW_KEYS: Final = ("space", "ef_construction", "ef_search", "max_neighbors")

Progress = Callable[[str], None]


def record_digest(record: dict[str, Any]) -> str:
    """The digest of one record's id, document, metadata and embedding."""
    return digest({key: record[key] for key in ("id", "document", "metadata", "embedding")})


def _collections(client: Any, prefix: str) -> list[Any]:
    found = [client.get_collection(c.name) for c in client.list_collections()]
    return sorted((c for c in found if c.name.startswith(f"{prefix}-")), key=lambda c: c.name)


def _pages(collection: Any, wanted: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The records of `wanted` still in `collection`, a page at a time.

    Always by id: offset pages of a collection being written to could skip a record.
    """
    include = ["documents", "metadatas", "embeddings"]
    for start in range(0, len(wanted), _PAGE):
        page = collection.get(ids=wanted[start : start + _PAGE], include=include)
        ids = list(page["ids"])
        embeddings = page["embeddings"]
        yield [
            {
                "collection": collection.name,
                "id": str(record_id),
                "document": page["documents"][index],
                "metadata": dict(page["metadatas"][index] or {}),
                # Chroma keeps float32; a live collection may still answer with the float64
                # it was given, so every vector is read as the float32 it is stored as.
                "embedding": [float(x) for x in numpy.asarray(embeddings[index], numpy.float32)],
            }
            for index, record_id in enumerate(ids)
        ]


def _probe(collection: Any, records: dict[str, list[float]]) -> dict[str, Any] | None:
    """The ids nearest to the first record's embedding (by id), or None when empty.

    Neighbours are looked for among the first `_PROBE_POOL` ids backed up.

    Ids tied with the farthest one returned are left out: which of equally
    distant records a query returns is not fixed, and the probe must not flake.
    """
    if not records:
        return None
    # Asked among backed-up records only (the first ids): a live collection may hold more.
    pool = sorted(records)[:_PROBE_POOL]
    first = pool[0]
    count = min(_PROBE_SIZE + 1, len(pool))
    result = collection.query(
        query_embeddings=[records[first]], ids=pool, n_results=count, include=["distances"]
    )
    ids = [str(i) for i in result["ids"][0]]
    distances = [round(float(d), 5) for d in result["distances"][0]]
    if count < len(pool):
        ids = [i for i, d in zip(ids, distances, strict=True) if d < distances[-1]]
    return {"query_id": first, "ids": sorted(ids)}


def export(client: Any, prefix: str, target: Path, progress: Progress) -> list[dict[str, Any]]:
    """Write every record of the `{prefix}-*` collections to `target`; their manifest entries."""
    entries: list[dict[str, Any]] = []
    with target.open("w", encoding="utf-8") as stream:
        for collection in _collections(client, prefix):
            digests: dict[str, str] = {}
            #: The probe's pool: vectors of the first `_PROBE_POOL` ids backed up.
            pool: dict[str, list[float]] = {}
            # Ids first, then their records: offset pages of a collection being written to
            # could skip a record, a list of ids cannot (one deleted since is left out).
            wanted = sorted(str(i) for i in collection.get(include=[])["ids"])
            for page in _pages(collection, wanted):
                for record in page:
                    if record["id"] in digests:
                        continue
                    digests[record["id"]] = record_digest(record)
                    pool[record["id"]] = record["embedding"]
                    stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                for later in sorted(pool)[_PROBE_POOL:]:
                    del pool[later]
                progress(f"knowledge: {collection.name}: {len(digests)} records")
            # configuration_json: `configuration` warns about the (absent) embedding function.
            hnsw = dict((collection.configuration_json or {}).get("hnsw") or {})
            entries.append(
                {
                    "name": collection.name,
                    "metadata": dict(collection.metadata or {}),
                    "configuration": {"hnsw": {k: hnsw[k] for k in _HNSW_KEYS if k in hnsw}},
                    "count": len(digests),
                    "records": digests,
                    "probe": _probe(collection, pool),
                }
            )
    return entries


def read_records(source: Path) -> Iterator[dict[str, Any]]:
    """The records of a knowledge file, naming the line of one that cannot be read."""
    with source.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise BackupError(f"{source.name}: line {number} is corrupt: {error}") from None
            if not isinstance(record, dict) or not {"collection", "id", "embedding"} <= set(record):
                raise BackupError(f"{source.name}: line {number} is not a knowledge record")
            yield record


def check_file(source: Path, entries: list[dict[str, Any]]) -> list[str]:
    """Problems of the knowledge file against the manifest: digests and counts per record."""
    expected: dict[str, dict[str, str]] = {entry["name"]: entry["records"] for entry in entries}
    problems: list[str] = []
    seen: dict[str, set[str]] = {name: set() for name in expected}
    try:
        for record in read_records(source):
            name, record_id = str(record["collection"]), str(record["id"])
            where = f"{source.name}: record {record_id!r} of collection {name!r}"
            want = expected.get(name, {}).get(record_id)
            if want is None:
                problems.append(f"{where} is not in the manifest")
            elif record_digest(record) != want:
                problems.append(f"{where}: digest mismatch (record altered)")
            seen.setdefault(name, set()).add(record_id)
    except BackupError as error:
        problems += problems_of(error)
        return problems
    for name, records in expected.items():
        missing = sorted(set(records) - seen.get(name, set()))
        if missing:
            problems.append(
                f"{source.name}: collection {name!r} lacks {len(missing)} of {len(records)}"
                f" records, e.g. {missing[0]!r}"
            )
    return problems


def refuse_existing(client: Any, entries: list[dict[str, Any]]) -> None:
    """BackupError when Chroma already holds a collection of the backup's names."""
    existing = {c.name for c in client.list_collections()}
    clashes = sorted(existing & {entry["name"] for entry in entries})
    if clashes:
        raise BackupError(
            f"Chroma already holds collection {clashes[0]!r}: restore needs empty story knowledge"
        )


def load(client: Any, entries: list[dict[str, Any]], source: Path, progress: Progress) -> None:
    """Create each collection with its settings and write its records; refuses existing ones."""
    refuse_existing(client, entries)
    collections = {
        entry["name"]: client.create_collection(
            entry["name"],
            embedding_function=None,
            metadata=entry["metadata"] or None,
            configuration=entry["configuration"],
        )
        for entry in entries
    }
    batch: dict[str, list[dict[str, Any]]] = {name: [] for name in collections}
    written = 0

    def flush(name: str) -> None:
        records = batch[name]
        if records:
            collections[name].add(
                ids=[r["id"] for r in records],
                embeddings=[r["embedding"] for r in records],
                documents=[r["document"] for r in records],
                metadatas=[r["metadata"] or None for r in records],
            )
            batch[name] = []

    for record in read_records(source):
        name = str(record["collection"])
        batch[name].append(record)
        written += 1
        if len(batch[name]) >= _PAGE:
            flush(name)
            progress(f"knowledge: {written} records restored")
    for name in collections:
        flush(name)
    progress(f"knowledge: {written} records restored")


#: Largest difference of one vector component after a restore: Chroma normalises vectors
#: of a cosine collection as it indexes them, which may move a float32 by one unit in the
#: last place; anything larger is a real difference.
EMBEDDING_TOLERANCE: Final = 1e-6


def same_record(restored: dict[str, Any], backed_up: dict[str, Any]) -> bool:
    """Whether a restored record equals the backed-up one (vectors within the tolerance)."""
    if (restored["document"], restored["metadata"]) != (
        backed_up["document"],
        backed_up["metadata"],
    ):
        return False
    ours, theirs = restored["embedding"], backed_up["embedding"]
    return len(ours) == len(theirs) and all(
        abs(a - b) <= EMBEDDING_TOLERANCE for a, b in zip(ours, theirs, strict=True)
    )


def _batched(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _pool(collection: Any, backed_up: Iterable[str]) -> dict[str, list[float]]:
    """The restored vectors of the probe's pool: the first `_PROBE_POOL` ids backed up."""
    wanted = heapq.nsmallest(_PROBE_POOL, backed_up)
    return {r["id"]: r["embedding"] for page in _pages(collection, wanted) for r in page}


def check_restored(client: Any, entries: list[dict[str, Any]], source: Path) -> list[str]:
    """Problems of restored collections against the backup file: settings, counts, every
    record (document, metadata, embedding), and the similarity probe.

    The file is read a page at a time, and each page's records fetched from Chroma by id
    and compared, so memory holds one page, not the corpus.
    """
    collections = {entry["name"]: client.get_collection(entry["name"]) for entry in entries}
    differing: Counter[str] = Counter()
    first_differing: dict[str, str] = {}
    for batch in _batched(read_records(source), _PAGE):
        for name, group in itertools.groupby(batch, key=lambda r: str(r["collection"])):
            if name not in collections:
                continue  # not in the manifest: check_file names it
            backed_up = {str(r["id"]): r for r in group}
            restored = {
                r["id"]: r for page in _pages(collections[name], list(backed_up)) for r in page
            }
            for record_id, original in backed_up.items():
                again = restored.get(record_id)
                if again is None or not same_record(again, original):
                    differing[name] += 1
                    first_differing[name] = min(first_differing.get(name, record_id), record_id)
    problems: list[str] = []
    for entry in entries:
        name = entry["name"]
        collection = collections[name]
        if dict(collection.metadata or {}) != entry["metadata"]:
            problems.append(f"Chroma collection {name!r}: metadata differs after restore")
        # Every backed-up record was found above; the count shows any the backup lacks.
        count = collection.count()
        if count != entry["count"]:
            problems.append(
                f"Chroma collection {name!r}: {count} records restored, {entry['count']} backed up"
            )
        if differing[name]:
            problems.append(
                f"Chroma collection {name!r}: {differing[name]} records differ after restore,"
                f" e.g. {first_differing[name]!r}"
            )
        probe = _probe(collection, _pool(collection, entry["records"]))
        if probe != entry["probe"]:
            problems.append(
                f"Chroma collection {name!r}: the similarity query returned {probe!r},"
                f" not {entry['probe']!r}"
            )
    return problems
