"""Hybrid relevance and the token budget: how retrieved chunks are ranked and chosen.

For a query, every candidate chunk (the nearest by vector, plus those that
contain a query term) gets

    score = VECTOR_WEIGHT * vector + KEYWORD_WEIGHT * keyword          (0..1)

* `vector`: cosine similarity of the query's and the chunk's embeddings,
  clipped to 0..1 — as Chroma computes it for a search (1 - the distance in
  a cosine collection), so no embedding needs reading back to score;
* `keyword`: BM25-style term matching over the candidates, normalized by the
  query's total term weight — 1.0 when a chunk contains every query term
  often, 0 when it contains none. Terms match as substrings of the normalized
  text, so a Korean name matches with any particle attached ("민수" in "민수는").

`pack` then keeps the best chunks that fit the token budget, skipping a chunk
that would overflow it in favour of smaller ones further down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from server.knowledge.text import estimate_tokens, normalize

VECTOR_WEIGHT: Final = 0.7
KEYWORD_WEIGHT: Final = 0.3
# BM25's term-frequency saturation and length normalization.
_K1: Final = 1.2
_B: Final = 0.75


@dataclass(frozen=True, slots=True)
class Candidate:
    """A chunk that may answer the query, with what scoring needs."""

    key: str
    text: str
    #: Cosine similarity of the query's and the chunk's embeddings (-1..1).
    similarity: float


def vector_score(similarity: float) -> float:
    """A cosine similarity clipped to 0..1; 0 for NaN, should a degenerate vector give one."""
    return max(0.0, min(1.0, similarity)) if math.isfinite(similarity) else 0.0


def keyword_scores(terms: Sequence[str], texts: Sequence[str]) -> list[float]:
    """BM25-style scores of `texts` for `terms`, each normalized to 0..1.

    Each term's occurrences in each text are counted once: a text holds the term where the
    count is not 0, so one scan gives both the term's weight and its frequency in the text.
    """
    if not terms or not texts:
        return [0.0] * len(texts)
    lowered = [normalize(text) for text in texts]
    lengths = [max(1, estimate_tokens(text)) for text in lowered]
    average = sum(lengths) / len(lengths)
    count = len(lowered)
    occurrences = {term: [text.count(term) for text in lowered] for term in terms}
    # Each term's weight, with its counts: +1 inside the log keeps a term found everywhere
    # worth a little.
    columns = [
        (math.log(1 + (found.count(0) + 0.5) / (count - found.count(0) + 0.5)) + 1e-3, found)
        for found in occurrences.values()
    ]
    total = sum(weight for weight, _ in columns)
    scores = []
    for index, length in enumerate(lengths):
        score = 0.0
        norm = _K1 * (1 - _B + _B * length / average)
        for weight, found in columns:
            times = found[index]
            if times:
                score += weight * times * (_K1 + 1) / (times + norm)
        # The saturated term frequency tops out at K1 + 1 per term.
        scores.append(min(1.0, score / (total * (_K1 + 1))))
    return scores


def hybrid_scores(terms: Sequence[str], candidates: Sequence[Candidate]) -> list[float]:
    """The combined score of each candidate, in order."""
    keyword = keyword_scores(terms, [candidate.text for candidate in candidates])
    return [
        VECTOR_WEIGHT * vector_score(candidate.similarity) + KEYWORD_WEIGHT * keyword_score
        for candidate, keyword_score in zip(candidates, keyword, strict=True)
    ]


def pack(costs: Sequence[int], budget: int) -> list[int]:
    """Indexes of the items to keep, in the given (best-first) order, within `budget` tokens."""
    kept: list[int] = []
    spent = 0
    for index, cost in enumerate(costs):
        if spent + cost <= budget:
            kept.append(index)
            spent += cost
    return kept
