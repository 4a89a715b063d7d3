"""The provider interface: a prompt in, a stream of text chunks out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from scriptgen.v1 import generation_pb2, project_pb2


@dataclass(frozen=True, slots=True)
class Brief:
    """What the episode is: the project and the writer's request."""

    project: project_pb2.Project
    title: str
    description: str
    episode_number: int


@dataclass(frozen=True, slots=True)
class Prompt:
    """One call to a model for one pipeline stage."""

    stage: generation_pb2.Stage.ValueType
    system: str
    user: str
    brief: Brief
    #: The beat outline, once the plan stage has drafted it.
    outline: str = ""


class Provider(Protocol):
    """A language model that streams text."""

    @property
    def name(self) -> str:
        """Provider name as it appears in events and metrics, e.g. `synthetic`."""

    @property
    def model(self) -> str:
        """Model name."""

    def stream(self, prompt: Prompt) -> AsyncIterator[str]:
        """Stream the completion as chunks of one or more tokens."""
