"""A serving process's garbage collection: its start-up heap frozen, its young objects
collected less often.

A long-running server holds hundreds of thousands of objects from start-up
(modules, protobuf descriptors, gRPC, Chroma, aiohttp) that live until it exits.
A full collection walks all of them: a pause of tens of milliseconds (100-150 ms
in a core with Chroma) that a burst of new streams, whose allocations trigger it,
waits out before its first events go out. Frozen once serving has begun, they are
never walked again; what is allocated afterwards is collected as usual.

What is allocated afterwards is mostly what a stream lives on (its task, coroutine
frames, futures, protobuf messages), alive for the stream's whole life. CPython
3.11's default collects the youngest generation every 700 net container
allocations, so in a burst of stream starts these objects are walked again and
again on their way to the oldest generation (a core spent ~0.15 ms per young
collection and ~1 ms per middle one, tens of them in a burst of 200 jobs).
Serving processes collect the youngest generation every YOUNG_THRESHOLD
allocations instead; the older generations keep their ratios to it, so they too
run ~70x less often. In bursts of 1000 new streams the core spent 15-27 % less
CPU per stream start (BENCHMARKS.md, session 39). Outside bursts, collections
cost under 1 % of a core's CPU with the default, so there is little to gain
there; session 8 measured more CPU per token with a 20,000 threshold, and
session 39's runs of the real provider path leaned the same way (see there).
The price is memory: cyclic garbage waits for these rarer collections (the
servers make little of it: a few objects per young collection with the default).

Freezes nest: a core and a gateway in one process (`scriptgen serve`, tests)
each freeze, and the heap is given back (and the thresholds restored) only when
the last of them thaws, so one stopping does not thaw the other's while it
still serves.
"""

from __future__ import annotations

import gc

#: Net container allocations between collections of the youngest generation while serving
#: (CPython 3.11's default is 700); the older generations keep their ratios to it (10 and
#: 10 by default), so they run as much less often.
YOUNG_THRESHOLD = 50_000

_depth = 0
_thresholds: tuple[int, int, int] | None = None


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, freeze every object still alive, and collect the
    youngest generation every YOUNG_THRESHOLD allocations from now on."""
    global _depth, _thresholds
    _depth += 1
    gc.collect()
    gc.freeze()
    if _thresholds is None:
        _thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, *_thresholds[1:])


def thaw_heap() -> None:
    """Undo one freeze; the last gives the frozen objects back to collection and restores
    the thresholds, so a process that starts servers again (tests, embedding) does not keep
    every stopped one."""
    global _depth, _thresholds
    _depth = max(0, _depth - 1)
    if _depth == 0:
        gc.unfreeze()
        if _thresholds is not None:
            gc.set_threshold(*_thresholds)
            _thresholds = None
