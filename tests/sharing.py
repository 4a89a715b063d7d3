"""How the suite shares the machine between its pytest-xdist workers.

`make pytest` runs the tests on TEST_WORKERS workers (two: the machines CI runs on
have two CPUs) with `--dist loadgroup`. Most tests wait far more than they compute,
so two run well side by side. The tests that load the machine and then judge a rate
or a time against it (capacity sweeps, twice the capacity offered, a soak, slow
readers beside fast ones, a heap after a thousand jobs, a drain of 100 open streams)
carry MACHINE: they are one xdist group, so they run one after another on one worker,
never two of them at once, while the other worker runs the rest.
"""

from __future__ import annotations

import pytest

#: The mark of a module whose tests need the machine's CPUs: `pytestmark = MACHINE`.
MACHINE = pytest.mark.xdist_group("machine")
