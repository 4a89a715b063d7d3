"""How the suite shares the machine: most tests on pytest-xdist workers, some alone.

`make pytest` runs the suite in two steps. First every test not marked MACHINE, on
TEST_WORKERS pytest-xdist workers (two: the machines CI runs on have two CPUs); most
tests wait far more than they compute, so two run well side by side. Then the tests
marked MACHINE, in one process, with the machine to themselves: those that load it
and judge a rate or a time against it (capacity sweeps, twice the capacity offered,
a soak, slow readers beside fast ones, a heap after many jobs, a drain of 100 open
streams, reconnect cycles, gRPC floods), and those whose bounds on a pace or a delay
are tight enough that another process's burst could cross them.
"""

from __future__ import annotations

import pytest

#: The mark of a module whose tests need the machine to themselves: `pytestmark = MACHINE`.
MACHINE = pytest.mark.machine
