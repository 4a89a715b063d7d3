"""Story knowledge: exported and checked a page at a time, in memory bounded by a page.

Each collection is filled into a real embedded Chroma; `tracemalloc` measures the
peak of `export` and of `check_restored` for two sizes. What may grow with the
corpus is what the manifest holds anyway, an id and a digest per record (a few
hundred bytes); never the records themselves, whose vectors alone are 2 KiB here.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import numpy

from server.backup import knowledge
from server.backup.stores import chroma_client

_PREFIX: Final = "memory"
_DIMENSION: Final = 64
#: One vector as the Python floats a record holds: 64 floats of 32 bytes.
_VECTOR_BYTES: Final = _DIMENSION * 32
_SIZES: Final = (1000, 3000)

T = TypeVar("T")


def _quiet(_: str) -> None:
    """Progress nobody listens to."""


def _fill(path: Path, count: int) -> None:
    with chroma_client("", path) as client:
        collection = client.create_collection(
            f"{_PREFIX}-beats", embedding_function=None, metadata={"dimension": _DIMENSION}
        )
        rng = numpy.random.default_rng(7)
        for start in range(0, count, 500):
            ids = [f"beat-{n:06d}" for n in range(start, min(count, start + 500))]
            collection.add(
                ids=ids,
                embeddings=rng.random((len(ids), _DIMENSION), dtype=numpy.float32),
                documents=[f"Mina hums, take {n}." for n in ids],
            )


def _peak(call: Callable[[], T]) -> tuple[T, int]:
    """What `call` returns, and the most memory Python held during it."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _measure(folder: Path, count: int) -> tuple[int, int]:
    """Peak bytes of exporting, then of checking a restore of, `count` records."""
    _fill(folder / "live", count)
    source = folder / knowledge.KNOWLEDGE_FILE
    with chroma_client("", folder / "live") as client:
        entries, exported = _peak(lambda: knowledge.export(client, _PREFIX, source, _quiet))
    assert entries[0]["count"] == count and entries[0]["probe"]["ids"]
    with chroma_client("", folder / "restored") as client:
        knowledge.load(client, entries, source, _quiet)
        problems, checked = _peak(lambda: knowledge.check_restored(client, entries, source))
    assert problems == []
    return exported, checked


def test_memory_is_bounded_by_a_page_not_the_corpus(tmp_path: Path) -> None:
    (small_export, small_check), (large_export, large_check) = (
        _measure(tmp_path / str(count), count) for count in _SIZES
    )
    added = _SIZES[1] - _SIZES[0]
    # Less than half a vector more per record: records are not kept, only ids and digests.
    assert (large_export - small_export) / added < _VECTOR_BYTES / 2, (small_export, large_export)
    assert (large_check - small_check) / added < _VECTOR_BYTES / 2, (small_check, large_check)


def test_a_restored_record_that_differs_or_is_missing_is_named(tmp_path: Path) -> None:
    _fill(tmp_path / "live", 1200)
    source = tmp_path / knowledge.KNOWLEDGE_FILE
    with chroma_client("", tmp_path / "live") as client:
        entries = knowledge.export(client, _PREFIX, source, _quiet)
    with chroma_client("", tmp_path / "restored") as client:
        knowledge.load(client, entries, source, _quiet)
        collection = client.get_collection(f"{_PREFIX}-beats")
        (vector,) = collection.get(ids=["beat-000700"], include=["embeddings"])["embeddings"]
        collection.delete(ids=["beat-000700", "beat-001100"])
        collection.add(
            ids=["beat-000700"], embeddings=[vector], documents=["Mina secretly hates rain."]
        )
        problems = knowledge.check_restored(client, entries, source)
    assert problems == [
        "Chroma collection 'memory-beats': 1199 records restored, 1200 backed up",
        "Chroma collection 'memory-beats': 2 records differ after restore, e.g. 'beat-000700'",
    ]
