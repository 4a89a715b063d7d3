"""Words, keyword terms and token estimates of story text, in any script (Latin, Hangul, kana …).

The hashing embedder, the chunker and keyword scoring all read text through
these functions, so a word means the same thing to each of them. Text is
NFKC-normalized and lower-cased first, so full-width letters and composed
Hangul compare equal to their usual forms.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Final

_WORD: Final = re.compile(r"\w+")
# Scripts written without spaces between words (or with particles glued to
# them, as Korean is): a model reads roughly one token per character there.
_DENSE: Final = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
)
#: Words too common to say anything about relevance.
_STOPWORD_TEXT: Final = (
    "a an and are as at be but by for from had has have he her his i in is it its of on or"
    " she that the their them they this to was were what when where which who will with you"
    " int ext"
)
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())


def normalize(text: str) -> str:
    """NFKC and lower case: the form every comparison uses."""
    return unicodedata.normalize("NFKC", text).lower()


def words(text: str) -> list[str]:
    """The words of `text`, normalized, in order."""
    return _WORD.findall(normalize(text))


def keyword_terms(query: str, limit: int = 12) -> list[str]:
    """The distinct words of a query worth matching: no stop words, longest first.

    Terms are `\\w+` runs, so they are safe inside a regular expression as they are.
    """
    seen: dict[str, None] = {}
    for word in words(query):
        if word in STOPWORDS or word.isdigit():
            continue
        if len(word) < 2 and not _DENSE.match(word):
            continue
        seen.setdefault(word, None)
    return sorted(seen, key=len, reverse=True)[:limit]


def is_dense(word: str) -> bool:
    """Whether `word` contains Hangul, kana or CJK ideographs."""
    return _DENSE.search(word) is not None


def estimate_tokens(text: str) -> int:
    """A model-independent token estimate: one per dense-script character, one per 4 others.

    Close enough to OpenAI's and Anthropic's tokenizers to keep a prompt within
    budget (it errs high for Korean), and it needs no tokenizer download.
    """
    if not text:
        return 0
    # No dense script is ASCII: most story text skips the scan (a plan stage's retrieval
    # weighs every candidate chunk this way, more than once).
    dense = 0 if text.isascii() else len(_DENSE.findall(text))
    return dense + math.ceil((len(text) - dense) / 4)


def head(text: str, tokens: int) -> str:
    """The longest start of `text` within `tokens`, cut after a space when one is near."""
    if estimate_tokens(text) <= tokens:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= tokens - 1:
            low = middle
        else:
            high = middle - 1
    cut = text[:low]
    space = cut.rfind(" ")
    if space > len(cut) * 3 // 4:
        cut = cut[:space]
    return cut.rstrip() + "…"


def tail(text: str, tokens: int) -> str:
    """The longest end of `text` within `tokens`, starting after a space when one is near."""
    if estimate_tokens(text) <= tokens:
        return text
    low, high = 0, len(text)
    while low < high:  # the longest suffix that fits
        middle = (low + high + 1) // 2
        if estimate_tokens(text[len(text) - middle :]) <= tokens - 1:
            low = middle
        else:
            high = middle - 1
    cut = text[len(text) - low :]
    space = cut.find(" ")
    if 0 <= space < len(cut) // 4:
        cut = cut[space + 1 :]
    return "…" + cut.lstrip()
