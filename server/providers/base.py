"""The provider interface: a prompt in, a stream of text chunks out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from scriptgen.v1 import generation_pb2, project_pb2

#: Appended to the user prompt when a provider continues another's unfinished text.
CONTINUE_INSTRUCTION = (
    "The text so far was cut off. Continue it exactly where it stops, without repeating"
    " anything already written and without any preamble."
)


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
    #: Text already delivered by an earlier provider; the model continues it.
    partial: str = ""


#: How a model's text ended (`TokenUsage.stop`). The model ended it itself: OpenAI's
#: `stop`, Anthropic's `end_turn` or `stop_sequence`.
STOP_END = "end"
#: The text was cut at the request's output cap (OpenAI's `length`, Anthropic's `max_tokens`):
#: what came is sound but unfinished, and the router asks the same provider for the rest.
STOP_OUTPUT_LIMIT = "output_limit"


@dataclass(slots=True)
class TokenUsage:
    """What one provider call spent, as the provider reported it (if it did), and how its
    text ended."""

    input_tokens: int = 0
    output_tokens: int = 0
    reported: bool = False
    #: STOP_END or STOP_OUTPUT_LIMIT once the API said how the text ended; "" when it did
    #: not say (the synthetic writer), taken as STOP_END. A refusal or a content filter is
    #: no stop but a `refused` ProviderFailure, and a stream that ends without saying is a
    #: `connection` one.
    stop: str = ""
    #: Set before the first text when the call continues `Prompt.partial` exactly where it
    #: stops (Anthropic's assistant prefill): its text can repeat none of the partial, so
    #: the router trims no overlap off it, and a line repeated at the seam stays.
    exact_continuation: bool = False


class Provider(Protocol):
    """A language model that streams text.

    `stream` raises `server.providers.errors.ProviderFailure` for anything that
    goes wrong on the provider's side, and fills `usage` when the API reports
    token counts and how the text ended. Cancelling the iteration closes the HTTP stream.
    Once the stop reason is in (`usage.stop` set) nothing read after it fails the call:
    the text is complete.
    """

    @property
    def name(self) -> str:
        """Provider name as it appears in events and metrics, e.g. `synthetic`."""

    @property
    def model(self) -> str:
        """Model name."""

    def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        """Stream the completion as chunks of one or more tokens."""
