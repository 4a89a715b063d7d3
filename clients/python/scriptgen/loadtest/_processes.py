"""CPU time and memory of the server processes, and how busy the machine was, sampled in a
thread during a run."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading: monotonic time, CPU seconds used so far (user + system), RSS bytes."""

    time: float
    cpu_seconds: float
    rss_bytes: int


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


def describe(pid: int, role: str) -> WatchedProcess:
    """A WatchedProcess for `pid`, with its command line when it can be read."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        command = ""
    return WatchedProcess(pid, role, command[:300])


class ProcessSampler:
    """Samples every watched process every `interval` seconds until stopped."""

    def __init__(self, processes: list[WatchedProcess], interval: float) -> None:
        self.processes = processes
        self._interval = interval
        self._handles: dict[int, psutil.Process] = {}
        self.machine: list[MachineSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadtest-sampler", daemon=True)

    def watch(self, process: WatchedProcess) -> None:
        """Add a process (e.g. a client worker) while sampling."""
        self.processes.append(process)

    def sample(self) -> None:
        """Take one reading of every watched process, and of the machine, now."""
        self.machine.append(machine_sample())
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
            process.samples.append(ProcessSample(time.monotonic(), cpu.user + cpu.system, rss))

    def start(self) -> None:
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


def machine_sample() -> MachineSample:
    """The machine's CPU time so far: busy (user, nice, system, interrupts) and stolen."""
    times = psutil.cpu_times()
    busy = times.user + times.system
    for extra in ("nice", "irq", "softirq"):
        busy += getattr(times, extra, 0.0)
    return MachineSample(time.monotonic(), busy, getattr(times, "steal", 0.0))
