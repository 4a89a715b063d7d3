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
import hashlib
import itertools
import math
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


def _features(text: str) -> Counter[str]:
    found: Counter[str] = Counter()
    tokens = words(text)
    for token in tokens:
        found["w:" + token] += 1
        padded = f"<{token}>"
        for start in range(max(1, len(padded) - 2)):
            found["c:" + padded[start : start + 3]] += 1
        if is_dense(token):
            # Korean and CJK words are short and carry particles: bigrams match stems.
            for start in range(len(token) - 1):
                found["c:" + token[start : start + 2]] += 1
    for first, second in itertools.pairwise(tokens):
        found[f"b:{first} {second}"] += 1
    return found


_WEIGHTS: Final = {"w": _WORD_WEIGHT, "b": _BIGRAM_WEIGHT, "c": _TRIGRAM_WEIGHT}


class HashingEmbedder:
    """Hashed word, word-pair and character-trigram features (see the module docstring)."""

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        if dimension < 16:
            raise ValueError("the hashing embedder needs at least 16 dimensions")
        self._dimension = dimension

    @property
    def name(self) -> str:
        return "hashing-ngram-v1"

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed_one(self, text: str) -> list[float]:
        """The unit vector of one text."""
        vector = [0.0] * self._dimension
        for feature, count in _features(text).items():
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            sign = 1.0 if value >> 63 else -1.0
            vector[value % self._dimension] += sign * _WEIGHTS[feature[0]] * (1 + math.log(count))
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            # Cosine distance is undefined for a zero vector; a text without
            # words gets one fixed direction instead.
            vector[0] = 1.0
            return vector
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if sum(len(text) for text in texts) <= _INLINE_CHARACTERS:
            return [self.embed_one(text) for text in texts]
        return await asyncio.to_thread(lambda: [self.embed_one(text) for text in texts])

    async def close(self) -> None:
        return None
