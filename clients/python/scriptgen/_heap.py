"""Keep a process's start-up heap out of garbage collection (`gc.freeze`).

A long-running server holds hundreds of thousands of objects from start-up
(modules, protobuf descriptors, gRPC, Chroma, aiohttp) that live until it exits.
A full collection walks all of them: a pause of tens of milliseconds (100-150 ms
in a core with Chroma) that a burst of new streams, whose allocations trigger it,
waits out before its first events go out. Frozen once serving has begun, they are
never walked again; what is allocated afterwards is collected as usual.

Freezes nest: a core and a gateway in one process (`scriptgen serve`, tests)
each freeze, and the heap is given back only when the last of them thaws, so
one stopping does not thaw the other's while it still serves.
"""

from __future__ import annotations

import gc

_depth = 0


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then freeze every object still alive."""
    global _depth
    _depth += 1
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Undo one freeze; the last gives the frozen objects back to collection, so a process
    that starts servers again (tests, embedding) does not keep every stopped one."""
    global _depth
    _depth = max(0, _depth - 1)
    if _depth == 0:
        gc.unfreeze()
