"""CPU time and memory of the server processes, and how busy the machine was, sampled in a
thread during a run.

The processes the servers start during the run are measured too: every RESCAN_SECONDS
the sampler looks for new children of the servers it follows (a provider worker the
core started in place of one that exited, a gateway worker its supervisor restarted),
at most MAX_CHILDREN in a run, and counts each one's CPU from its start, not from when it
was found (its memory from when it was found).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from scriptgen.loadtest._discovery import MAX_CHILDREN, children_of

#: How often the followed servers' children are looked for again (a scan of /proc).
RESCAN_SECONDS = 2.0
#: A child younger than this is left for the next scan: just forked, it may not have run
#: its own program yet, and would be named by its parent's command line.
SETTLE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading: monotonic time, CPU seconds used so far (user + system), RSS bytes, and
    the sampler's pass it was taken in (readings of one pass are of one moment; -1: made up,
    as a child's start)."""

    time: float
    cpu_seconds: float
    rss_bytes: int
    sweep: int = -1


@dataclass(frozen=True, slots=True)
class MachineSample:
    """One reading of the whole machine: monotonic time, CPU seconds so far over all CPUs
    spent busy and stolen by the hypervisor (a run at the edge of the CPUs differs from
    run to run; these say whether it was there)."""

    time: float
    busy_seconds: float
    steal_seconds: float


@dataclass(slots=True)
class WatchedProcess:
    """A process whose CPU and memory the report shows."""

    pid: int
    role: str
    command: str = ""
    samples: list[ProcessSample] = field(default_factory=list)
    #: Started by a server while sampling (a worker in place of one that exited).
    started_during_run: bool = False


def describe(pid: int, role: str) -> WatchedProcess:
    """A WatchedProcess for `pid`, with its command line when it can be read."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        command = ""
    return WatchedProcess(pid, role, command[:300])


class ProcessSampler:
    """Samples every watched process every `interval` seconds until stopped, and watches
    the processes that those of `parents` (pid, role) start meanwhile."""

    def __init__(
        self,
        processes: list[WatchedProcess],
        interval: float,
        parents: Sequence[tuple[int, str]] = (),
    ) -> None:
        self.processes = processes
        self._interval = interval
        self._handles: dict[int, psutil.Process] = {}
        self._parents = list(parents)
        self._known = {process.pid for process in processes}
        self._adopted = 0
        self._scanned = float("-inf")
        self._began = float("inf")
        #: Passes over the watched processes so far (`ProcessSample.sweep`).
        self._sweeps = 0
        #: `sample` runs on the sampler's thread and, at the start and end, the caller's.
        self._lock = threading.Lock()
        self.machine: list[MachineSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadtest-sampler", daemon=True)

    def watch(self, process: WatchedProcess) -> None:
        """Add a process (e.g. a client worker) while sampling."""
        self._known.add(process.pid)
        self.processes.append(process)

    def sample(self) -> None:
        """Take one reading of every watched process, and of the machine, now."""
        with self._lock:
            self._sample()

    def _sample(self) -> None:
        sweep = self._sweeps
        self._sweeps += 1
        self.machine.append(machine_sample())
        if self._parents and time.monotonic() - self._scanned >= RESCAN_SECONDS:
            self._scanned = time.monotonic()
            self._adopt_children()
        for process in list(self.processes):
            handle = self._handles.get(process.pid)
            try:
                if handle is None:
                    handle = self._handles[process.pid] = psutil.Process(process.pid)
                with handle.oneshot():
                    cpu = handle.cpu_times()
                    rss = handle.memory_info().rss
            except (psutil.Error, OSError):
                continue  # it ended; its last reading stands
            process.samples.append(
                ProcessSample(time.monotonic(), cpu.user + cpu.system, rss, sweep)
            )

    def _adopt_children(self) -> None:
        """Watch the followed servers' children not watched yet; one started since sampling
        began gets a first reading of no CPU at its start (with the memory it has when
        found), so that all its CPU counts."""
        for pid, role in children_of(self._parents):
            if pid in self._known or self._adopted >= MAX_CHILDREN:
                continue
            age = _age_seconds(pid)
            if age is None or age < SETTLE_SECONDS:
                continue
            try:
                handle = psutil.Process(pid)
                rss = handle.memory_info().rss
            except (psutil.Error, OSError):
                continue
            self._handles[pid] = handle  # the readings that follow use it too
            self._known.add(pid)
            self._adopted += 1
            process = describe(pid, role)
            born = time.monotonic() - age
            if born > self._began:
                process.started_during_run = True
                process.samples.append(ProcessSample(born, 0.0, rss))
            self.processes.append(process)

    def start(self) -> None:
        self._began = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()


def _age_seconds(pid: int) -> float | None:
    """How long ago `pid` started; None when it is gone.

    On Linux from its start in clock ticks since boot (/proc/PID/stat) against the boot
    clock: psutil's `create_time` adds that to a boot time in whole seconds, and so may be
    up to a second off."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        ticks = int(fields[19])  # field 22, `starttime`; the fields after `comm` begin at 3
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / _CLOCK_TICKS)
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        created = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None
    return max(0.0, time.time() - created)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_sample() -> MachineSample:
    """The machine's CPU time so far: busy (user, nice, system, interrupts) and stolen."""
    times = psutil.cpu_times()
    busy = times.user + times.system
    for extra in ("nice", "irq", "softirq"):
        busy += getattr(times, extra, 0.0)
    return MachineSample(time.monotonic(), busy, getattr(times, "steal", 0.0))
