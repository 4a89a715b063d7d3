"""Splits a document into retrieval chunks that are exact, contiguous slices of its text.

Chunks are cut at the strongest boundary that keeps each within the token
budget: a blank line (paragraphs, Fountain elements), else a line break, else
the end of a sentence, else a space, else — text without any of those —
between characters. A new Fountain scene (`INT.`, `EXT.` …) starts a new chunk
once the current one is half full. Because the chunks partition the text,
joining them in order gives the document back exactly; nothing else needs to
store it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from server.knowledge.text import estimate_tokens

DEFAULT_CHUNK_TOKENS: Final = 300

_SEPARATORS: Final = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"\n"),
    # Sentence ends, also full-width (U+FF01, U+FF1F) and before closing quotes (U+201D, U+2019).
    re.compile("(?<=[.!?\u3002\uff01\uff1f\u2026])[\"'\u201d\u2019)\\]]*\\s+"),
    re.compile(r"\s+"),
)
_SCENE_HEADING: Final = re.compile(r"(?:INT|EXT|EST|INT\./EXT|INT/EXT|I/E)[. ]|\.[^.\s]", re.I)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One slice of a document: `text == document[start : start + len(text)]`."""

    index: int
    start: int
    text: str


def _cut(text: str, separator: re.Pattern[str]) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in separator.finditer(text):
        if match.end() > start and match.end() < len(text):
            pieces.append(text[start : match.end()])
            start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece]


def _pieces(text: str, max_tokens: int, level: int = 0) -> Iterator[str]:
    if estimate_tokens(text) <= max_tokens:
        yield text
        return
    if level == len(_SEPARATORS):
        # Any run of max_tokens characters fits: no character costs more than one token.
        for start in range(0, len(text), max_tokens):
            yield text[start : start + max_tokens]
        return
    for piece in _cut(text, _SEPARATORS[level]):
        yield from _pieces(piece, max_tokens, level + 1)


def split(text: str, max_tokens: int = DEFAULT_CHUNK_TOKENS) -> list[Chunk]:
    """The chunks of `text`, each at most `max_tokens` by `estimate_tokens` (none for "")."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    if not text:
        return []
    chunks: list[Chunk] = []
    current: list[str] = []
    current_tokens = 0
    start = 0

    def flush() -> None:
        nonlocal current, current_tokens, start
        if current:
            joined = "".join(current)
            chunks.append(Chunk(len(chunks), start, joined))
            start += len(joined)
            current, current_tokens = [], 0

    for piece in _pieces(text, max_tokens):
        tokens = estimate_tokens(piece)
        scene = _SCENE_HEADING.match(piece.lstrip()) is not None
        if current_tokens + tokens > max_tokens or (scene and current_tokens * 2 >= max_tokens):
            flush()
        current.append(piece)
        current_tokens += tokens
    flush()
    return chunks
