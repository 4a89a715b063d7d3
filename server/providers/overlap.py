"""Trimming the overlap at a mid-stream provider switch, so deltas never repeat text.

A provider asked to continue a partial script often restarts a little before
the cut, e.g. re-writes the last line. `OverlapTrimmer` holds back the new
provider's first characters until it can tell how much of them repeats the
end of what was already delivered, drops that part, then passes text through.
"""

from __future__ import annotations

#: How far back into the delivered text a restart is looked for, in characters.
WINDOW_CHARS = 1000
#: Shorter overlaps are taken as coincidence (a shared newline), not a restart.
MIN_OVERLAP_CHARS = 4


def overlap(delivered: str, continuation: str) -> int:
    """Length of the longest end of `delivered` that `continuation` starts with (0 if short).

    A shorter overlap counts too when it is the whole unfinished last line: a provider
    cut one to three characters into a line that rewrites the line from its start
    ("G" then "GRACE") is restarting, never coincidentally repeating.
    """
    longest = min(len(delivered), len(continuation))
    for size in range(longest, MIN_OVERLAP_CHARS - 1, -1):
        if delivered.endswith(continuation[:size]) and continuation[:size].strip():
            return size
    unfinished = delivered[delivered.rfind("\n") + 1 :]
    if unfinished.strip() and continuation.startswith(unfinished):
        return len(unfinished)
    return 0


class OverlapTrimmer:
    """Feeds a continuation through, minus what repeats the delivered text's end."""

    def __init__(self, delivered: str) -> None:
        self._window = delivered[-WINDOW_CHARS:]
        self._held = ""
        self._decided = not self._window

    def feed(self, chunk: str) -> str:
        """Text of `chunk` that may be delivered now (possibly empty while undecided)."""
        if self._decided:
            return chunk
        self._held += chunk
        # While the held text still occurs in the window, a longer restart may be unfolding.
        if len(self._held) < len(self._window) and self._held in self._window:
            return ""
        return self._decide()

    def finish(self) -> str:
        """Text still held back when the continuation ends."""
        return "" if self._decided else self._decide()

    def _decide(self) -> str:
        self._decided = True
        held, self._held = self._held, ""
        return held[overlap(self._window, held) :]
