"""The clock grid that text deltas are cut on, shared by every stream of a process.

The coalescer (`server.jobs.coalescer`) cuts a stream's timed deltas on this
grid, and the synthetic writer wakes on it, so a chunk arrives when its cut is
due. Streams that cut in the same turn of the event loop send their gRPC
messages and SSE frames together, and the processes downstream wake once for
many streams instead of once per stream. There are GRID_PHASES points per
window: streams fall into that many cohorts by when they started, so one turn
of the loop cuts a share of the streams rather than all of them.
"""

from __future__ import annotations

import math

#: Grid points per window.
GRID_PHASES = 4


def grid_point(latest: float, window: float) -> float:
    """The last point of the grid (GRID_PHASES points per `window`) not after `latest`."""
    step = window / GRID_PHASES
    return math.floor(latest / step) * step
