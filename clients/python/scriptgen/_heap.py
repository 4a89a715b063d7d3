"""Keep a process's start-up heap out of garbage collection (`gc.freeze`).

A long-running server holds hundreds of thousands of objects from start-up
(modules, protobuf descriptors, gRPC, Chroma, aiohttp) that live until it exits.
A full collection walks all of them: a pause of tens of milliseconds (100-150 ms
in a core with Chroma) that a burst of new streams, whose allocations trigger it,
waits out before its first events go out. Frozen once serving has begun, they are
never walked again; what is allocated afterwards is collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then freeze every object still alive."""
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Give the frozen objects back to collection: a process that starts servers again
    (tests, embedding) must not keep every stopped one."""
    gc.unfreeze()
