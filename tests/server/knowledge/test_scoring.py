"""Hybrid scores and the token budget."""

from __future__ import annotations

import math
import random

import pytest

from server.knowledge.scoring import (
    KEYWORD_WEIGHT,
    VECTOR_WEIGHT,
    Candidate,
    hybrid_scores,
    keyword_scores,
    pack,
)
from server.knowledge.text import estimate_tokens, head, keyword_terms, tail


def test_keyword_scores_are_normalized_and_reward_rare_terms() -> None:
    texts = ["Minsu on the roof", "the roof, the roof", "Gadeok lighthouse", "nothing here"]
    scores = keyword_scores(["minsu", "roof"], texts)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores[0] > scores[1] > 0.0 and scores[2] == scores[3] == 0.0
    assert keyword_scores([], texts) == [0.0] * 4
    assert keyword_scores(["민수"], ["민수는 간호사", "의사"])[0] > 0.0, "particles attached"


def test_hybrid_combines_both_scores() -> None:
    candidates = [
        Candidate("same", "minsu", 1.0),
        Candidate("opposite", "other", -1.0),
        Candidate("half", "other", 0.5),
        Candidate("degenerate", "other", math.nan),
    ]
    same, opposite, half, degenerate = hybrid_scores(["minsu"], candidates)
    assert opposite == degenerate == 0.0, "similarities below 0 (or not a number) count as 0"
    assert half == VECTOR_WEIGHT * 0.5
    assert VECTOR_WEIGHT < same <= VECTOR_WEIGHT + KEYWORD_WEIGHT


def test_pack_keeps_the_best_that_fit() -> None:
    assert pack([50, 80, 30, 10], 100) == [0, 2, 3]
    assert pack([200], 100) == []
    assert pack([], 100) == []


def test_terms_and_estimates() -> None:
    assert keyword_terms("The night of the Gadeok lighthouse, 민수 and 3") == [
        "lighthouse",
        "gadeok",
        "night",
        "민수",
    ]
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("민수") == 2
    long = "word " * 100
    assert estimate_tokens(head(long, 10)) <= 10 and head(long, 10).endswith("…")
    assert estimate_tokens(tail(long, 10)) <= 10 and tail(long, 10).startswith("…")
    assert head("short", 10) == "short" == tail("short", 10)


def test_the_estimate_is_one_per_dense_character_and_one_per_four_others() -> None:
    # ASCII text (no dense script in it) and mixed text alike: the dense characters of
    # Hangul, kana and CJK counted one each, everything else by four, rounded up.
    dense = {"민", "수", "カ", "な", "漢", "字", "ᄀ", "ㄱ"}
    alphabet = [*dense, "a", " ", "\n", ".", "é", "—", "\x7f"]
    rng = random.Random(7)
    texts = [
        "word",
        "INT. ROOF - NIGHT",
        *("".join(rng.choices(alphabet, k=rng.randint(1, 30))) for _ in range(2000)),
    ]
    for text in texts:
        count = sum(1 for ch in text if ch in dense)
        assert estimate_tokens(text) == count + math.ceil((len(text) - count) / 4), repr(text)


def test_keyword_scores_are_the_bm25_formula_term_by_term() -> None:
    # The scores as BM25 spells them, term by term: each term's weight from the texts that
    # hold it, its count in each text saturated by K1 and normalized by the text's length.
    rng = random.Random(13)
    vocabulary = ["minsu", "roof", "night", "민수는", "the", "ro", "ferry", "lighthouse"]
    for _ in range(200):
        texts = [
            " ".join(rng.choices(vocabulary, k=rng.randint(0, 30)))
            for _ in range(rng.randint(1, 25))
        ]
        terms = rng.sample(["minsu", "roof", "민수", "ro", "ferry", "absent"], rng.randint(1, 4))
        lengths = [max(1, estimate_tokens(text)) for text in texts]
        average = sum(lengths) / len(lengths)
        weights = {}
        for term in terms:
            holding = sum(1 for text in texts if term in text)
            weights[term] = math.log(1 + (len(texts) - holding + 0.5) / (holding + 0.5)) + 1e-3
        expected = []
        for text, length in zip(texts, lengths, strict=True):
            score = 0.0
            for term, weight in weights.items():
                times = text.count(term)
                if times:
                    norm = 1.2 * (1 - 0.75 + 0.75 * length / average)
                    score += weight * times * 2.2 / (times + norm)
            expected.append(min(1.0, score / (sum(weights.values()) * 2.2)))
        assert keyword_scores(terms, texts) == pytest.approx(expected, rel=1e-12, abs=1e-15)
