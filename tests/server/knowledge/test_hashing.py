"""The default embedder: deterministic, normalized, and close for texts that share words."""

from __future__ import annotations

import hashlib
import math
import struct
import subprocess
import sys
from collections.abc import Sequence

from server.knowledge import HashingEmbedder


def cosine(left: Sequence[float], right: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors (as the embedder's are): their dot product."""
    return math.fsum(x * y for x, y in zip(left, right, strict=True))


async def test_vectors_are_unit_length_and_sized() -> None:
    embedder = HashingEmbedder()
    vectors = await embedder.embed(["Night shift at Seoul General.", "", "...", "민수" * 2000])
    assert [len(v) for v in vectors] == [1024] * 4
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)
    assert embedder.name == "hashing-ngram-v1" and embedder.dimension == 1024


def test_vectors_are_the_same_in_every_process() -> None:
    code = (
        "from server.knowledge import HashingEmbedder;"
        "print(HashingEmbedder(64).embed_one('민수는 야간 간호사다 night nurse')[:8])"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1
    expected = HashingEmbedder(64).embed_one("민수는 야간 간호사다 night nurse")[:8]
    assert runs.pop().strip() == str(expected)


def test_shared_words_and_particles_bring_texts_close() -> None:
    embedder = HashingEmbedder()
    query = embedder.embed_one("민수가 옥상에 간다")
    related = embedder.embed_one("민수는 옥상에서 담배를 피운다")
    unrelated = embedder.embed_one("The lighthouse keeper fixes the radio")
    assert cosine(query, related) > cosine(query, unrelated) + 0.1
    english = embedder.embed_one("the smugglers hide their radio")
    assert cosine(english, unrelated) > cosine(english, related)


def test_vectors_are_those_of_hashing_ngram_v1() -> None:
    # Digests of the vectors (IEEE doubles, little-endian) that hashing-ngram-v1 gave before
    # its features and buckets were cached: stored collections hold them, so a change here
    # needs a new embedder name.
    texts = [
        "민수는 야간 간호사다 night nurse",
        "INT. ROOFTOP - NIGHT\n\nMinsu smokes alone. Minsu smokes again.\n\n"
        "MINSU\nShe was here, she was here.\n",
        "",
    ]
    expected = {
        64: "1514908d79bd2c656f05c22d84080e46d5cef5eeb5a3bd6c814c2e77a52f5b88",
        1024: "05f266b86e7093c1d650d651689890468b6575110c00c2e75426bd0e6d67b3a0",
    }
    for dimension, digest in expected.items():
        embedder = HashingEmbedder(dimension)
        for _ in range(2):  # the second time from the caches
            packed = b"".join(
                struct.pack("<d", x) for text in texts for x in embedder.embed_one(text)
            )
            assert hashlib.sha256(packed).hexdigest() == digest
