"""Tokens as the synthetic writer counts them: words with their trailing whitespace.

A TextDelta carries one token or, when the server coalesces, several; the
count is the number of `\\S+\\s*|\\s+` matches, so the tokens of all deltas of
a job add up to the tokens of its saved script.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\S+\s*|\s+")


def count_tokens(text: str) -> int:
    """How many word-sized tokens `text` holds."""
    return len(_TOKEN.findall(text))
