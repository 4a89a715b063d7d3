"""CPU time and memory of the server processes, and how busy the machine was, sampled in a
thread during a run."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

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


def listening_pid(port: int) -> int | None:
    """The process listening on loopback TCP `port`, when this user may see it."""
    for connection in _connections():
        if connection.status == psutil.CONN_LISTEN and _port(connection.laddr) == port:
            return connection.pid
    return None


def discover_servers(port: int) -> list[tuple[int, str]]:
    """Every process listening on `port` and the loopback servers they are connected to.

    Several processes listen on one port when they share it (SO_REUSEPORT: the workers of
    `scriptgen gateway --workers N`), and each is measured. For a gateway this finds its
    core (and any Redis or PostgreSQL it talks to); each as (pid, role), the role read
    from its command line (`server_role`).
    """
    connections = _connections()
    listeners: dict[int, list[int]] = {}
    for connection in connections:
        bound = _port(connection.laddr)
        if connection.status != psutil.CONN_LISTEN or connection.pid is None or bound is None:
            continue
        pids = listeners.setdefault(bound, [])
        if connection.pid not in pids:
            pids.append(connection.pid)
    first = listeners.get(port, [])
    found = list(first)
    for connection in connections:
        if connection.pid not in first or connection.status != psutil.CONN_ESTABLISHED:
            continue
        remote = connection.raddr
        if not remote or not _loopback(str(getattr(remote, "ip", ""))):
            continue
        remote_port = _port(remote)
        for peer in listeners.get(remote_port, []) if remote_port is not None else []:
            if peer not in found:
                found.append(peer)
    return [(pid, server_role(pid)) for pid in found]


def with_children(pid: int) -> list[int]:
    """`pid` and every process it started, at any depth (a gateway's workers, a database's
    backends), as far as this user may see them."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.Error, OSError):
        return [pid]
    return [pid, *(child.pid for child in children)]


def server_role(pid: int) -> str:
    """What a report calls `pid`: its role read from its command line (`role_of`), or
    `server` when the process cannot be read."""
    try:
        process = psutil.Process(pid)
        return role_of(process.cmdline(), process.name())
    except (psutil.Error, OSError):
        return "server"


#: `scriptgen` subcommands and the roles a report gives their processes.
_SUBCOMMAND_ROLES = {"server": "core", "gateway": "gateway", "serve": "core+gateway"}
_WORKER_FLAG = "--worker-name"
_STANDIN_MODULE = "scriptgen.loadtest._standin"


def role_of(command: Sequence[str], name: str) -> str:
    """The role of a process with this command line and process `name`.

    `core` for `scriptgen server`, `gateway` for `scriptgen gateway` and `gateway worker`
    for one of its workers (started with `--worker-name`), `core+gateway` for `scriptgen
    serve`, `standin` for the load tool's OpenAI stand-in; anything else by its name
    (`redis-server`, `postgres`). `scriptgen` is the console script or `python -m scriptgen`.
    """
    if _STANDIN_MODULE in command:
        return "standin"
    for index, part in enumerate(command[:-1]):
        if PurePath(part).name != "scriptgen":
            continue
        role = _SUBCOMMAND_ROLES.get(command[index + 1])
        if role is None:
            break
        worker = any(arg.partition("=")[0] == _WORKER_FLAG for arg in command[index + 2 :])
        return f"{role} worker" if role == "gateway" and worker else role
    return name


def _connections() -> list[psutil._ntuples.sconn]:
    try:
        return psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []


def _port(address: object) -> int | None:
    """The port of a psutil address; None for the empty address of an unbound socket."""
    port = getattr(address, "port", None)
    return port if isinstance(port, int) else None


def _loopback(address: str) -> bool:
    """Whether `address` is a loopback address; an IPv4 one in IPv6 form too
    (`::ffff:127.0.0.1`, how a dual-stack socket names its peer, which Python 3.11's
    `is_loopback` does not take for loopback)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback
