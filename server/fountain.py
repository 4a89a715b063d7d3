"""Fountain structure review: scene headings, character cues and dialogue, counts and verdict.

Follows the Fountain rules that matter for a written episode: a scene heading
starts with INT, EXT, EST, INT./EXT, INT/EXT or I/E (or is forced with a
leading "."); a character cue is an all-caps line (or one forced with "@")
after a blank line, followed by dialogue; a transition is an all-caps line
ending in "TO:" (or forced with ">").

The verdict (`ScriptReview.rejections`) is what makes a script unfit to save:

* it is empty;
* it has no scene heading at all;
* more than `MAX_EMPTY_CUES` character cues, and more than `MAX_EMPTY_CUE_SHARE`
  of all cues, have no dialogue after them (a model that lost the format).

Anything milder — a script that does not open with a heading, a stray cue
without dialogue — is a warning kept in the quality report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADING = re.compile(r"^(INT|EXT|EST|INT\./EXT|INT/EXT|I/E)[.\s]", re.IGNORECASE)
_EXTENSION = re.compile(r"\s*(\([^)]*\))?\s*\^?\s*$")

#: Cues without dialogue tolerated before the share below is looked at.
MAX_EMPTY_CUES = 3
#: Share of cues without dialogue beyond which (with more than MAX_EMPTY_CUES) a script is rejected.
MAX_EMPTY_CUE_SHARE = 0.25
#: Script lines per page, as in a typeset screenplay; a page runs about a minute.
LINES_PER_PAGE = 55


@dataclass(slots=True)
class ScriptReview:
    """What review found in a Fountain script."""

    scene_count: int = 0
    word_count: int = 0
    cast: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Character cues followed by dialogue.
    dialogue_count: int = 0
    transition_count: int = 0
    #: Character cues with nothing after them.
    empty_cue_count: int = 0
    #: Lines of the script, blank ones included (they take room on a page too).
    line_count: int = 0
    #: Why the script cannot be saved; empty when it passes.
    rejections: list[str] = field(default_factory=list)

    @property
    def estimated_minutes(self) -> float:
        """Running time at one page (LINES_PER_PAGE lines) a minute, to a tenth."""
        return round(self.line_count / LINES_PER_PAGE, 1)

    @property
    def passed(self) -> bool:
        """Whether the script may be saved."""
        return not self.rejections


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
    if line != line.upper():
        return False  # the common case, an action line, decided without a walk of its letters
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and any(c.isupper() for c in letters)


def _verdict(result: ScriptReview, script: str) -> list[str]:
    if not script.strip():
        return ["the script is empty"]
    rejections = []
    if result.scene_count == 0:
        rejections.append("the script has no scene heading")
    cues = result.dialogue_count + result.empty_cue_count
    if (
        result.empty_cue_count > MAX_EMPTY_CUES
        and result.empty_cue_count > MAX_EMPTY_CUE_SHARE * cues
    ):
        rejections.append(
            f"{result.empty_cue_count} of {cues} character cues have no dialogue"
            f" (more than {MAX_EMPTY_CUES} and {MAX_EMPTY_CUE_SHARE:.0%})"
        )
    return rejections


def review(script: str) -> ScriptReview:
    """Count scenes, speaking characters, dialogue and words; list problems; give the verdict."""
    result = ScriptReview(word_count=len(script.split()))
    lines = [line.rstrip() for line in script.splitlines()]
    result.line_count = len(lines)
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
            result.transition_count += 1
        elif previous_blank and _is_cue(line) and not line.endswith(":"):
            name = _EXTENSION.sub("", line.removeprefix("@")).strip()
            if not following:
                result.empty_cue_count += 1
                result.warnings.append(f"line {index + 1}: character cue {name!r} has no dialogue")
            else:
                result.dialogue_count += 1
                if name and name not in seen:
                    seen.add(name)
                    result.cast.append(name)
        previous_blank = False
    if result.scene_count == 0:
        result.warnings.append("the script has no scene heading")
    first = next((line.strip() for line in lines if line.strip()), "")
    if first and not _is_heading(first) and not first.upper().startswith(("FADE IN", "TITLE:")):
        result.warnings.append("the script does not open with a scene heading or FADE IN")
    result.rejections = _verdict(result, script)
    return result
