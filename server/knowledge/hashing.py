"""The default embedder: hashed word and character n-grams — offline, deterministic, no model.

Each text becomes a bag of features, hashed into `dimension` buckets with a
signed hash (the "hashing trick"):

* every word (NFKC, lower-cased `\\w+` run), weight 1;
* every pair of adjacent words, weight 0.5 — phrases such as "night shift";
* every character trigram of each word padded as `<word>`, weight 0.5 — so
  "민수는" and "민수가" (one name, two particles) or "smuggle" and "smuggler"
  share features, which matters for Korean and for inflected words;
* for words in Hangul, kana or CJK ideographs, also every character bigram
  (weight 0.5), the usual index unit for those scripts.

Counts are damped (1 + ln count) and the vector is L2-normalized, so cosine
similarity is a dot product. It knows no synonyms — that is what OpenAI or
MiniLM embeddings add — but it finds names, places and phrases in any
language, costs nothing and never leaves the machine. The hash is BLAKE2b,
not Python's `hash`, so vectors are the same in every process.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import math
import operator
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Final

from server.knowledge.text import is_dense, words

DEFAULT_DIMENSION: Final = 1024
_WORD_WEIGHT: Final = 1.0
_BIGRAM_WEIGHT: Final = 0.5
_TRIGRAM_WEIGHT: Final = 0.5
# Texts this long are embedded in a worker thread, not on the event loop.
_INLINE_CHARACTERS: Final = 2000
# Distinct words whose features are kept, and hashed features kept per embedder: both are
# only caches (vectors are the same without them), bounded so memory stays small.
_WORD_CACHE: Final = 1 << 15
_BUCKET_CACHE: Final = 1 << 17


@functools.lru_cache(maxsize=_WORD_CACHE)
def _word_features(token: str) -> tuple[str, ...]:
    """The features of one word: itself, its padded trigrams, and bigrams in dense scripts."""
    padded = f"<{token}>"
    found = ["w:" + token]
    found.extend(["c:" + padded[start : start + 3] for start in range(max(1, len(padded) - 2))])
    if is_dense(token):
        # Korean and CJK words are short and carry particles: bigrams match stems.
        found.extend(["c:" + token[start : start + 2] for start in range(len(token) - 1)])
    return tuple(found)


def _features(text: str) -> Counter[str]:
    # Words repeat, so their features are built once (`_word_features`); counting in
    # one Counter call keeps the first-seen order, so vectors sum in the same order.
    tokens = words(text)
    found: list[str] = []
    for token in tokens:
        found.extend(_word_features(token))
    found.extend([f"b:{first} {second}" for first, second in itertools.pairwise(tokens)])
    return Counter(found)


_WEIGHTS: Final = {"w": _WORD_WEIGHT, "b": _BIGRAM_WEIGHT, "c": _TRIGRAM_WEIGHT}
#: `1 + ln count` for the counts most features have, worked out once: the same doubles
#: `math.log` gives, without a call per feature (most counts are 1).
_DAMPED: Final = (0.0, *(1 + math.log(count) for count in range(1, 256)))


class HashingEmbedder:
    """Hashed word, word-pair and character-trigram features (see the module docstring)."""

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        if dimension < 16:
            raise ValueError("the hashing embedder needs at least 16 dimensions")
        self._dimension = dimension
        #: feature -> (bucket, signed weight); embedding runs in worker threads too, and
        #: a lost race only hashes a feature twice.
        self._buckets: dict[str, tuple[int, float]] = {}

    @property
    def name(self) -> str:
        return "hashing-ngram-v1"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _bucket(self, feature: str) -> tuple[int, float]:
        """The bucket of a feature and its signed weight (hashed once, then cached)."""
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        sign = 1.0 if value >> 63 else -1.0
        bucket = (value % self._dimension, sign * _WEIGHTS[feature[0]])
        if len(self._buckets) >= _BUCKET_CACHE:
            self._buckets.clear()
        self._buckets[feature] = bucket
        return bucket

    def embed_one(self, text: str) -> array[float]:
        """The unit vector of one text, as doubles in one buffer.

        An episode's vectors wait for Chroma's upsert; as lists of float objects they took
        32 KB each and, freed in bulk, fragmented the allocator's pools (soak RSS growth).
        """
        vector = [0.0] * self._dimension
        buckets = self._buckets
        damped = _DAMPED
        limit = len(damped)
        for feature, count in _features(text).items():
            index, weight = buckets.get(feature) or self._bucket(feature)
            vector[index] += weight * (damped[count] if count < limit else 1 + math.log(count))
        # The same products summed in the same order as a generator of `x * x` (the same
        # doubles), without a Python frame per element.
        norm = math.sqrt(sum(map(operator.mul, vector, vector)))
        if norm == 0.0:
            # Cosine distance is undefined for a zero vector; a text without
            # words gets one fixed direction instead.
            vector[0] = 1.0
            return array("d", vector)
        return array("d", map(norm.__rtruediv__, vector))

    async def embed(self, texts: Sequence[str]) -> list[array[float]]:
        if sum(len(text) for text in texts) <= _INLINE_CHARACTERS:
            return [self.embed_one(text) for text in texts]
        return await asyncio.to_thread(lambda: [self.embed_one(text) for text in texts])

    async def close(self) -> None:
        return None
