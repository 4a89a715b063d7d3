"""A mid-stream failover cut 1-3 characters into a line, whose continuation restarts that
line, must not repeat those characters (e.g. "...GRACE\nY" delivered, then "You came back.")."""

from __future__ import annotations

import pytest

from server import Core
from tests.faults.conftest import anthropic_standin, failover_core, openai_standin  # noqa: F401
from tests.faults.test_provider_faults import (
    OUTLINE,
    SCRIPT,
    _check_stream,
    _continuation,
    _generate,
)
from tests.standins.llm_standin import LlmStandin, Reply


@pytest.mark.parametrize("cut", [65, 66, 67, 71, 72, 73])  # 1-3 characters into a line
async def test_a_restarted_short_line_is_not_repeated(
    failover_core: Core,  # noqa: F811
    openai_standin: LlmStandin,  # noqa: F811
    anthropic_standin: LlmStandin,  # noqa: F811
    cut: int,
) -> None:
    openai_standin.openai = [Reply(text=OUTLINE), Reply(text=SCRIPT, chunk_chars=1, cut_after=cut)]
    anthropic_standin.anthropic = [Reply(text=_continuation(restart_line=True))]
    anthropic_standin.refuses_prefill = True  # asked with a user turn: it may restart the line
    events, saved = await _generate(failover_core)
    _check_stream(events, saved)  # fails: e.g. "GRAGRACE", "YYou came back."
