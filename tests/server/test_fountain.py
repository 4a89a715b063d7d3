"""Fountain review and the synthetic writer's output."""

from __future__ import annotations

import random

from scriptgen.v1 import project_pb2

from server import fountain
from server.fountain import review
from server.providers.base import Brief
from server.providers.synthetic import plan_outline, token_count, tokens, write_screenplay


def _brief(language: str = "en", title: str = "Pilot") -> Brief:
    return Brief(
        project_pb2.Project(name="projects/p", title="Show", language=language), title, "", 1
    )


def test_review_counts_scenes_cast_and_words() -> None:
    script = (
        "INT. DINER - NIGHT\n\nMaya waits.\n\nMAYA\nYou came.\n\nJONAH (V.O.)\nI said I would.\n\n"
        "CUT TO:\n\nEXT. STREET - DAY\n\n@지수\n안녕.\n\nMAYA\nAgain.\n"
    )
    found = review(script)
    assert found.scene_count == 2
    assert found.cast == ["MAYA", "JONAH", "지수"]
    assert found.word_count == len(script.split())
    assert found.warnings == []


def test_review_warns_about_broken_structure() -> None:
    found = review("Somebody walks.\n\nMAYA\n\nNothing else.\n")
    assert "the script has no scene heading" in found.warnings
    assert any("MAYA" in w and "no dialogue" in w for w in found.warnings)


def test_synthetic_writer_is_deterministic_valid_fountain() -> None:
    first, second = write_screenplay(_brief()), write_screenplay(_brief())
    assert first == second
    assert write_screenplay(_brief(title="Another")) != first
    found = review(first)
    assert found.scene_count >= 3 and len(found.cast) >= 2 and found.warnings == []
    assert "".join(tokens(first)) == first


def test_synthetic_writer_writes_korean_for_korean_projects() -> None:
    script = write_screenplay(_brief("ko"))
    assert review(script).warnings == []
    assert any("\uac00" <= ch <= "\ud7a3" for ch in script)
    assert plan_outline(_brief("ko")).startswith("1. ")


def test_token_count_is_the_number_of_tokens() -> None:
    # Every character Python counts as whitespace, words in two scripts, a zero-width space
    # (not whitespace), at the start, the end and between.
    spaces = [chr(code) for code in range(0x3100) if chr(code).isspace()]
    alphabet = [*spaces, "a", "b", "가", "\u200b", "."]
    texts = ["", " ", "word", " lead", "trail ", "a  b\n\nc", "대사: 말투\u3000끝"]
    rng = random.Random(9)
    texts += ["".join(rng.choices(alphabet, k=rng.randint(1, 16))) for _ in range(3000)]
    for text in texts:
        assert token_count(text) == len(tokens(text)), repr(text)


def test_cue_detection_is_the_rule_as_first_written() -> None:
    """An action line is turned away before its letters are walked; the rule is unchanged."""

    def as_first_written(line: str) -> bool:
        if line.startswith("@"):
            return len(line) > 1
        letters = [c for c in line if c.isalpha()]
        return bool(letters) and line == line.upper() and any(c.isupper() for c in letters)

    lines = [
        "MAYA",
        "DETECTIVE REYES (V.O.)",
        "MAYA (CONT'D) ^",
        "Maya",
        "Rain streaks the window. MAYA stands very still.",
        "1234",
        "...",
        "",
        "@",
        "@지수",
        "지수",
        "ÉLODIE",
        "Élodie",
        "ß",
        "STRASSE",
        "ǅ",
        "Ⅷ",
        "ⅷ",
        "X2",
        "x2",
        "CUT TO:",
    ]
    rng = random.Random(11)
    alphabet = "aZé지ßǅⅧ1 .:(@)'"
    lines += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(2000)]
    for line in lines:
        assert fountain._is_cue(line) == as_first_written(line), repr(line)
