"""Versioned prompt templates: one text file per stage, filled with the brief's fields."""

from __future__ import annotations

from importlib import resources
from string import Template

from scriptgen.v1 import project_pb2

from server.providers.base import Brief

PROMPT_VERSION = "v1"


def _template(stage: str, part: str) -> Template:
    text = (
        resources.files(__name__).joinpath(PROMPT_VERSION, f"{stage}.{part}.txt").read_text("utf-8")
    )
    return Template(text)


def render(stage: str, brief: Brief, outline: str = "") -> tuple[str, str]:
    """The (system, user) prompt of `stage` ("plan" or "write") for `brief`."""
    project = brief.project
    fields = {
        "project_title": project.title,
        "project_type": project_pb2.ProjectType.Name(project.type)
        .removeprefix("PROJECT_TYPE_")
        .lower(),
        "logline": project.logline or "-",
        "project_description": project.description or "-",
        "language": project.language or "en",
        "episode_number": str(brief.episode_number),
        "title": brief.title,
        "description": brief.description or "-",
        "outline": outline or "-",
    }
    return (
        _template(stage, "system").substitute(fields),
        _template(stage, "user").substitute(fields),
    )
