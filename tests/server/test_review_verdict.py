"""The review verdict: what makes a script unfit to save, and the counts of the quality report."""

from __future__ import annotations

from server.fountain import LINES_PER_PAGE, review


def test_a_good_script_passes_with_its_counts() -> None:
    script = (
        "INT. DINER - NIGHT\n\nMaya waits.\n\nMAYA\nYou came.\n\nTHEO\nI did.\n\n"
        "CUT TO:\n\nEXT. STREET - DAY\n\n@지수\n안녕.\n\n> FADE OUT.\n"
    )
    found = review(script)
    assert found.passed and found.rejections == []
    assert (found.scene_count, found.dialogue_count, found.transition_count) == (2, 3, 2)
    assert found.empty_cue_count == 0 and found.cast == ["MAYA", "THEO", "지수"]
    assert found.line_count == len(script.splitlines())
    assert found.estimated_minutes == round(found.line_count / LINES_PER_PAGE, 1)


def test_empty_and_headingless_scripts_are_rejected() -> None:
    assert review("  \n\n").rejections == ["the script is empty"]
    found = review("Somebody walks.\n\nMAYA\nHello.\n")
    assert found.rejections == ["the script has no scene heading"]


def test_a_few_cues_without_dialogue_are_only_warnings() -> None:
    script = "INT. ROOM - DAY\n\n" + "MAYA\nHi.\n\n" * 10 + "THEO\n\nGRACE\n\nJONAH\n\n"
    found = review(script)
    assert found.passed and found.empty_cue_count == 3
    assert sum("has no dialogue" in warning for warning in found.warnings) == 3


def test_many_cues_without_dialogue_reject_the_script() -> None:
    script = "INT. ROOM - DAY\n\n" + "MAYA\nHi.\n\n" * 4 + "THEO\n\n" * 4
    found = review(script)
    assert not found.passed
    assert found.rejections == ["4 of 8 character cues have no dialogue (more than 3 and 25%)"]
