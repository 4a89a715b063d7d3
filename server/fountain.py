"""Fountain structure review: scene headings, character cues and dialogue, counts and warnings.

Follows the Fountain rules that matter for a written episode: a scene heading
starts with INT, EXT, EST, INT./EXT, INT/EXT or I/E (or is forced with a
leading "."); a character cue is an all-caps line (or one forced with "@")
after a blank line, followed by dialogue; a transition is an all-caps line
ending in "TO:" (or forced with ">").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADING = re.compile(r"^(INT|EXT|EST|INT\./EXT|INT/EXT|I/E)[.\s]", re.IGNORECASE)
_EXTENSION = re.compile(r"\s*(\([^)]*\))?\s*\^?\s*$")


@dataclass(slots=True)
class ScriptReview:
    """What review found in a Fountain script."""

    scene_count: int = 0
    word_count: int = 0
    cast: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_heading(line: str) -> bool:
    if line.startswith(".") and not line.startswith(".."):
        return True
    return bool(_HEADING.match(line))


def _is_transition(line: str) -> bool:
    if line.startswith(">") and not line.endswith("<"):
        return True
    return line.isupper() and line.endswith("TO:")


def _is_cue(line: str) -> bool:
    if line.startswith("@"):
        return len(line) > 1
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and line == line.upper() and any(c.isupper() for c in letters)


def review(script: str) -> ScriptReview:
    """Count scenes, speaking characters and words; list structure problems."""
    result = ScriptReview(word_count=len(script.split()))
    lines = [line.rstrip() for line in script.splitlines()]
    seen: set[str] = set()
    previous_blank = True
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            previous_blank = True
            continue
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if previous_blank and _is_heading(line):
            result.scene_count += 1
        elif previous_blank and _is_transition(line):
            pass
        elif previous_blank and _is_cue(line) and not line.endswith(":"):
            name = _EXTENSION.sub("", line.removeprefix("@")).strip()
            if not following:
                result.warnings.append(f"line {index + 1}: character cue {name!r} has no dialogue")
            elif name and name not in seen:
                seen.add(name)
                result.cast.append(name)
        previous_blank = False
    if result.scene_count == 0:
        result.warnings.append("the script has no scene heading")
    first = next((line.strip() for line in lines if line.strip()), "")
    if first and not _is_heading(first) and not first.upper().startswith(("FADE IN", "TITLE:")):
        result.warnings.append("the script does not open with a scene heading or FADE IN")
    return result
