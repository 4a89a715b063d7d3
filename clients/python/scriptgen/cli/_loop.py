"""Which event loop the server commands run on: uvloop when it is installed, else asyncio's.

uvloop's libuv-based loop roughly halves the loop's own share of a streaming
process's CPU (timers, socket callbacks), so `serve`, `server` and `gateway`
use it by default; `--event-loop asyncio` runs the standard loop for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
from collections.abc import Callable, Mapping

EVENT_LOOPS = ("uvloop", "asyncio")


def default_event_loop() -> str:
    """`uvloop` when importable, else `asyncio`."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def add_event_loop_argument(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Declare `--event-loop` [SCRIPTGEN_EVENT_LOOP]."""
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=environ.get("SCRIPTGEN_EVENT_LOOP", default_event_loop()),
        help="event loop of the server process [SCRIPTGEN_EVENT_LOOP] (default: %(default)s)",
    )


def loop_factory(name: str | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of loop `name`; None means asyncio's default."""
    if name != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop
