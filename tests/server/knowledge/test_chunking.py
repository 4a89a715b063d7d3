"""Chunks are exact slices of the text, within the token budget, cut at good boundaries."""

from __future__ import annotations

import random

import pytest

from server.knowledge.chunking import split
from server.knowledge.text import estimate_tokens

SCRIPT = (
    "INT. HOSPITAL CORRIDOR - NIGHT\n\nMinsu pushes a cart. The lights flicker.\n\n"
    "MINSU\nWho's there?\n\nDR. HAN (O.S.)\nJust me. Go home.\n\n"
    "EXT. ROOFTOP - CONTINUOUS\n\nWind. Minsu lights a cigarette.\n\n"
)
KOREAN = "민수는 병원 복도를 걷는다. 불빛이 깜빡인다! 누군가 있나? " * 40


@pytest.mark.parametrize(
    "text",
    [SCRIPT * 20, KOREAN, "x" * 5000, "word " * 3000, "", "short", "a\n\n\n\nb\n" * 300],
)
@pytest.mark.parametrize("max_tokens", [1, 7, 50, 300])
def test_chunks_partition_the_text_within_the_budget(text: str, max_tokens: int) -> None:
    chunks = split(text, max_tokens)
    assert "".join(chunk.text for chunk in chunks) == text
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start : chunk.start + len(chunk.text)] == chunk.text
        assert chunk.text
        assert estimate_tokens(chunk.text) <= max_tokens


def test_random_text_round_trips() -> None:
    alphabet = "ab 민수\n.!?\t\"'"
    generator = random.Random(7)
    for _ in range(200):
        text = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 400)))
        assert "".join(chunk.text for chunk in split(text, generator.randint(1, 40))) == text


def test_cuts_prefer_paragraphs_and_scenes() -> None:
    chunks = split(SCRIPT * 4, 40)
    assert all(chunk.text.endswith("\n\n") for chunk in chunks[:-1])
    assert any(chunk.text.startswith("EXT. ROOFTOP") for chunk in chunks)


def test_korean_sentences_are_not_cut_mid_word() -> None:
    chunks = split(KOREAN, 60)
    assert len(chunks) > 3
    assert all(chunk.text.endswith(("? ", ". ", "! ")) for chunk in chunks[:-1])


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        split("text", 0)
