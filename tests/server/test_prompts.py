"""Prompt templates: guidance picked by data (type, language, length), budgets kept."""

from __future__ import annotations

import json
import random
from importlib import resources
from string import Template

import pytest
from scriptgen.v1 import project_pb2

from server import prompts
from server.jobs.story_context import estimate_tokens, format_episodes, format_passages
from server.providers.base import Brief
from tests.server.knowledge_fake import FakePassage


def _brief(**fields: object) -> Brief:
    project = project_pb2.Project(name="projects/p", title="Show", **fields)  # type: ignore[arg-type]
    return Brief(project, "Pilot", "a heist goes wrong", 1)


def test_every_type_has_guidance_and_a_default_length() -> None:
    manifest = json.loads(
        resources.files("server.prompts").joinpath("v2", "guidance.json").read_text("utf-8")
    )
    named = {v.name for v in project_pb2.ProjectType.DESCRIPTOR.values if v.number != 0}
    assert set(manifest["types"]) == named
    for kind in named:
        rendered = prompts.render("write", _brief(type=project_pb2.ProjectType.Value(kind)))
        assert rendered.templates[2].startswith("v2/types/")
        assert "$" not in rendered.system + rendered.user


@pytest.mark.parametrize(
    ("fields", "language_file", "length_file", "minutes"),
    [
        ({"language": "ko"}, "v2/languages/ko.txt", "v2/lengths/hour.txt", 60),
        (
            {"language": "en-GB", "type": project_pb2.PROJECT_TYPE_COMEDY},
            "v2/languages/en.txt",
            "v2/lengths/half_hour.txt",
            22,
        ),
        (
            {"language": "pt-BR", "type": project_pb2.PROJECT_TYPE_ADVERTISEMENT},
            "v2/languages/other.txt",
            "v2/lengths/spot.txt",
            1,
        ),
        ({"target_episode_minutes": 10}, "v2/languages/en.txt", "v2/lengths/short.txt", 10),
    ],
)
def test_guidance_follows_language_and_length(
    fields: dict[str, object], language_file: str, length_file: str, minutes: int
) -> None:
    brief = _brief(**fields)
    rendered = prompts.render("write", brief)
    assert language_file in rendered.templates and length_file in rendered.templates
    assert prompts.target_minutes(brief.project) == minutes
    if fields.get("language") == "pt-BR":
        assert '"pt-BR"' in rendered.system
    if length_file != "v2/lengths/spot.txt":
        assert f"about {minutes} minutes, roughly {minutes} script pages" in rendered.system


def test_the_plan_prompt_carries_context_and_user_text_verbatim() -> None:
    context = prompts.StoryContext(knowledge="[note] Bible: $cost is 5", previous_episodes="E1")
    rendered = prompts.render("plan", _brief(audience="kids", tone="warm"), context=context)
    assert "[note] Bible: $cost is 5" in rendered.user  # a "$" in the text stays as it is
    assert "Earlier episodes:\nE1" in rendered.user
    assert "Audience: kids" in rendered.user and "Tone and style: warm" in rendered.user
    snapshot = rendered.snapshot()
    assert (snapshot.stage, snapshot.system, snapshot.user) == (
        "plan",
        rendered.system,
        rendered.user,
    )


def test_budgets_keep_the_best_passages_and_the_newest_episodes() -> None:
    passages = [
        FakePassage("s1", "Low", "note", "low " * 200, 0.1),
        FakePassage("s2", "High", "note", "high", 0.9),
    ]
    assert format_passages(passages, 50) == ["[note] High: high"]
    episodes = [
        project_pb2.Episode(number=n, title=f"E{n}", outline="beat " * 100) for n in (1, 2, 3)
    ]
    kept = format_episodes(episodes, 300)
    assert [part.split('"')[1] for part in kept] == ["E2", "E3"]  # story order, newest kept
    assert estimate_tokens("abcd") == 1 and estimate_tokens("지수") == 2


def test_the_context_estimate_counts_ascii_by_four_and_every_other_character_as_one() -> None:
    # As counted one character at a time: ASCII (NUL and DEL too) by four, rounded up, and
    # everything else one each, lone surrogates included.
    alphabet = ["a", " ", "\x00", "\x7f", "\x80", "é", "지", "\u200b", "\ud800", "😀"]
    rng = random.Random(5)
    texts = [
        "",
        "abc",
        "abcd",
        "지수",
        "a지",
        *("".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(2000)),
    ]
    for text in texts:
        ascii_chars = sum(1 for ch in text if ord(ch) < 128)
        assert estimate_tokens(text) == (ascii_chars + 3) // 4 + len(text) - ascii_chars, repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "plain text, no placeholders",
        "$title and ${title}: $$5 and $$title",
        "ends with a dollar $",
        "a bad placeholder $5 and ${unclosed",
        "$missing next to $title${title}",
        "",
    ],
)
def test_a_parsed_template_fills_as_string_template_does(text: str) -> None:
    fields = {"title": "Night $hift"}  # a value's own `$` is never filled in
    parsed = prompts.ParsedTemplate.parse(text)
    assert parsed.fill(fields, strict=False) == Template(text).safe_substitute(fields)
    try:
        expected: str | type[Exception] = Template(text).substitute(fields)
    except (KeyError, ValueError) as error:
        expected = type(error)
    if isinstance(expected, str):
        assert parsed.fill(fields) == expected
    else:
        with pytest.raises(expected):
            parsed.fill(fields)


def test_every_shipped_template_fills_as_string_template_does() -> None:
    folder = resources.files("server.prompts").joinpath(prompts.PROMPT_VERSION)
    paths = [f for f in folder.iterdir() if f.name.endswith(".txt")]
    paths += [f for d in folder.iterdir() if d.is_dir() for f in d.iterdir()]
    assert len(paths) > 10
    fields = {name: f"<{name}>" for name in ("title", "logline", "outline", "script", "tone")}
    for path in paths:
        text = path.read_text("utf-8")
        parsed = prompts.ParsedTemplate.parse(text)
        assert parsed.fill(fields, strict=False) == Template(text).safe_substitute(fields)
