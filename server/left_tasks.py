"""Tasks nobody awaits any more (a close cut short at shutdown, an indexing dropped): their
outcome is still read when they end, so that a failure is logged rather than reported by
asyncio as "never retrieved"."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


def leave(task: asyncio.Future[Any], what: str) -> None:
    """From now on nobody waits for `task` (`what` it does, for the log)."""
    task.add_done_callback(functools.partial(_ended, what))


def _ended(what: str, task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("%s, left behind, failed: %s", what, task.exception())
