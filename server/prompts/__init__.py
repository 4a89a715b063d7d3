"""Versioned prompt templates: text files per stage, plus guidance chosen by data.

`v2/{stage}.system.txt` and `v2/{stage}.user.txt` hold the prompts of the
`plan`, `write` and `polish` calls. `v2/guidance.json` maps each project type,
language and length band to a guidance file (and each type to its default
episode length); the templates pull that guidance in through `$type_guidance`,
`$language_guidance` and `$length_guidance`. Adding a type, a language or a
band is a data change: a file and a line in the manifest.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from scriptgen.v1 import project_pb2

from server.providers.base import Brief

PROMPT_VERSION = "v2"
#: Stages with templates of their own.
STAGES = ("plan", "write", "polish")
#: Limits of a project's target_episode_minutes (0 means the type's default).
MAX_TARGET_MINUTES = 180
_EMPTY = "-"


@dataclass(frozen=True, slots=True)
class StoryContext:
    """What the plan stage knows beyond the request, already cut to its token budgets."""

    #: Retrieved story knowledge, formatted for the prompt.
    knowledge: str = ""
    #: Outlines of the project's latest episodes, formatted for the prompt.
    previous_episodes: str = ""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """One model call's prompt and the template files it came from."""

    stage: str
    system: str
    user: str
    templates: tuple[str, ...]

    def snapshot(self) -> project_pb2.PromptSnapshot.StagePrompt:
        """The prompt as the episode's prompt snapshot records it."""
        return project_pb2.PromptSnapshot.StagePrompt(
            stage=self.stage, system=self.system, user=self.user, templates=self.templates
        )


@functools.cache
def _read(path: str) -> str:
    # Templates ship inside the package and never change while the process runs.
    return resources.files(__name__).joinpath(PROMPT_VERSION, path).read_text("utf-8").strip()


@dataclass(frozen=True, slots=True)
class ParsedTemplate:
    """A `string.Template` split once into its text and its placeholders, so filling it is
    one join: `Template.substitute` runs a regular expression and a Python callback per
    placeholder on every call, ~35 µs a prompt, and a job renders two before its first token.
    Filling gives what `substitute` (strict) or `safe_substitute` gives."""

    #: In order: (text, None) for literal text; (the placeholder as written, its name);
    #: (the text as written, "") for a `$` that starts no valid placeholder.
    parts: tuple[tuple[str, str | None], ...]
    #: The fields its placeholders name.
    names: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> ParsedTemplate:
        parts: list[tuple[str, str | None]] = []
        end = 0
        for match in Template.pattern.finditer(text):
            parts.append((text[end : match.start()], None))
            name = match.group("named") or match.group("braced")
            if name is not None:
                parts.append((match.group(), name))
            elif match.group("escaped") is not None:
                parts.append((Template.delimiter, None))
            else:
                parts.append((match.group(), ""))
            end = match.end()
        parts.append((text[end:], None))
        kept = tuple((text, name) for text, name in parts if text or name is not None)
        return cls(kept, frozenset(name for _, name in kept if name))

    def fill(self, fields: Mapping[str, str], *, strict: bool = True) -> str:
        """The text with `fields` in; strict: a missing field raises KeyError, a bad
        placeholder ValueError (else both are left as written)."""
        out: list[str] = []
        for text, name in self.parts:
            if name is None:
                out.append(text)
            elif name in fields:
                out.append(fields[name])
            elif not strict:
                out.append(text)
            elif name:
                raise KeyError(name)
            else:
                raise ValueError(f"invalid placeholder {text!r} in a prompt template")
        return "".join(out)


@functools.cache
def _template(path: str) -> ParsedTemplate:
    return ParsedTemplate.parse(_read(path))


@functools.cache
def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(_read("guidance.json"))
    return manifest


def _type_entry(project: project_pb2.Project) -> dict[str, Any]:
    return _type_entry_of(project.type)


@functools.cache
def _type_entry_of(project_type: project_pb2.ProjectType.ValueType) -> dict[str, Any]:
    types: dict[str, dict[str, Any]] = _manifest()["types"]
    name = project_pb2.ProjectType.Name(project_type)
    return types.get(name) or types[_manifest()["default_type"]]


@functools.cache
def _type_label(project_type: project_pb2.ProjectType.ValueType) -> str:
    """A project type as the prompts name it ("web series" for PROJECT_TYPE_WEB_SERIES)."""
    name = project_pb2.ProjectType.Name(project_type)
    return name.removeprefix("PROJECT_TYPE_").lower().replace("_", " ")


def target_minutes(project: project_pb2.Project) -> int:
    """The episode length to aim for: the project's, else its type's default."""
    if 0 < project.target_episode_minutes <= MAX_TARGET_MINUTES:
        return project.target_episode_minutes
    return int(_type_entry(project)["default_minutes"])


def _guidance_files(project: project_pb2.Project, minutes: int) -> Mapping[str, str]:
    language = (project.language or "en").lower().split("-")[0]
    return _guidance_files_of(project.type, language, minutes)


@functools.lru_cache(maxsize=1024)
def _guidance_files_of(
    project_type: project_pb2.ProjectType.ValueType, language: str, minutes: int
) -> Mapping[str, str]:
    """The guidance files of a type, a language and a length: the manifest's choice, made
    once per combination (callers only read the dict)."""
    manifest = _manifest()
    bands = sorted(manifest["lengths"], key=lambda band: int(band["up_to_minutes"]))
    band = next((b for b in bands if minutes <= int(b["up_to_minutes"])), bands[-1])
    return {
        "type_guidance": str(_type_entry_of(project_type)["file"]),
        "language_guidance": str(manifest["languages"].get(language, manifest["other_language"])),
        "length_guidance": str(band["file"]),
    }


def render(
    stage: str,
    brief: Brief,
    *,
    outline: str = "",
    script: str = "",
    context: StoryContext | None = None,
) -> RenderedPrompt:
    """The prompt of `stage` ("plan", "write" or "polish") for `brief`."""
    if stage not in STAGES:
        raise ValueError(f"no templates for stage {stage!r}")
    project = brief.project
    context = context or StoryContext()
    minutes = target_minutes(project)
    fields = {
        "project_title": project.title,
        "project_type": _type_label(project.type),
        "logline": project.logline or _EMPTY,
        "project_description": project.description or _EMPTY,
        "audience": project.audience or _EMPTY,
        "tone": project.tone or _EMPTY,
        "language": project.language or "en",
        "target_minutes": str(minutes),
        "target_pages": str(minutes),
        "episode_number": str(brief.episode_number),
        "title": brief.title,
        "description": brief.description or _EMPTY,
        "outline": outline or _EMPTY,
        "script": script or _EMPTY,
        "knowledge": context.knowledge or _EMPTY,
        "previous_episodes": context.previous_episodes or _EMPTY,
    }
    guidance = _guidance_files(project, minutes)
    for key, path in guidance.items():
        fields[key] = _template(path).fill(fields, strict=False)
    system_file, user_file = f"{stage}.system.txt", f"{stage}.user.txt"
    system_template, user_template = _template(system_file), _template(user_file)
    system = system_template.fill(fields)
    user = user_template.fill(fields)
    named = system_template.names | user_template.names
    used = [system_file, user_file, *(p for k, p in guidance.items() if k in named)]
    return RenderedPrompt(
        stage=stage,
        system=system,
        user=user,
        templates=tuple(f"{PROMPT_VERSION}/{path}" for path in used),
    )
