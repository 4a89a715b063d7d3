"""Which processes a load run measures, and what the report calls each (its role).

For a target the tool did not start, the servers are found by the target's port: every
process listening on it at the target's address (several when they share the port with
SO_REUSEPORT, as the workers of `scriptgen gateway --workers N` do), then the loopback
servers those processes are connected to, one hop (a gateway's core), and the processes
those scriptgen servers started (a core's provider workers). Processes that hand
one inherited socket to their workers (gunicorn, a PostgreSQL postmaster) show as one of
them; name such servers with `--server-pid`, which brings each named process and those it
started. Only processes this user may see are found: as another user, a server's sockets
have no process.

A role is read from the command line: `core` (`scriptgen server`), `gateway` and `gateway
worker` (`scriptgen gateway`, a worker when started with `--worker-name`), `core+gateway`
(`scriptgen serve`), `standin` (the load tool's OpenAI stand-in). A child that is none of
these is its parent's `… worker`; any other process is named by its process name
(`redis-server`, `postgres`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePath

import psutil

from scriptgen.loadtest._config import LoadTestError, is_loopback_address, plain_ip

#: The most processes one `--server-pid` may bring: naming the machine's first process, or
#: a shell, would otherwise sample everything under it.
MAX_CHILDREN = 256
#: `scriptgen` subcommands and the roles of their processes.
_SUBCOMMAND_ROLES = {"server": "core", "gateway": "gateway", "serve": "core+gateway"}
_WORKER_FLAG = "--worker-name"
#: The module the stand-in runs as (`python -m`), which names its process `standin`.
STANDIN_MODULE = "scriptgen.loadtest._standin"


def scriptgen_role(command: Sequence[str]) -> str | None:
    """The role of a process running this command line, when it is a scriptgen server or the
    stand-in; None otherwise. `scriptgen` is the console script or `python -m scriptgen`."""
    if STANDIN_MODULE in command:
        return "standin"
    for index, part in enumerate(command[:-1]):
        if PurePath(part).name != "scriptgen":
            continue
        role = _SUBCOMMAND_ROLES.get(command[index + 1])
        if role is None:
            continue  # e.g. `coverage run --source scriptgen -m scriptgen server`
        worker = any(arg.partition("=")[0] == _WORKER_FLAG for arg in command[index + 2 :])
        return f"{role} worker" if role == "gateway" and worker else role
    return None


def role_of(command: Sequence[str], name: str) -> str:
    """The role of a process with this command line and process `name`: its scriptgen role,
    or else its name."""
    return scriptgen_role(command) or name


def _read(pid: int) -> tuple[list[str], str] | None:
    """The command line and name of `pid`; None when it is gone or may not be read."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            return process.cmdline(), process.name()
    except (psutil.Error, OSError):
        return None


def discover_servers(host: str, port: int) -> list[tuple[int, str]]:
    """The processes serving `host:port` and the loopback servers they are connected to,
    as (pid, role), those on the port first, each list in pid order."""
    connections = _connections()
    on_port: set[int] = set()
    listeners: dict[int, set[int]] = {}
    for connection in connections:
        bound = _port(connection.laddr)
        if connection.status != psutil.CONN_LISTEN or connection.pid is None or bound is None:
            continue
        listeners.setdefault(bound, set()).add(connection.pid)
        if bound == port and _serves(_ip(connection.laddr), host):
            on_port.add(connection.pid)
    peers: set[int] = set()
    for connection in connections:
        if connection.pid not in on_port or connection.status != psutil.CONN_ESTABLISHED:
            continue
        remote = connection.raddr
        remote_port = _port(remote)
        if remote_port is None or not is_loopback_address(_ip(remote)):
            continue
        peers |= listeners.get(remote_port, set())
    found = []
    for pid in [*sorted(on_port), *sorted(peers - on_port)]:
        read = _read(pid)
        if read is not None:  # gone since: nothing to measure
            found.append((pid, role_of(*read)))
    return found


def named_servers(pids: Iterable[int], known: Iterable[int] = ()) -> list[tuple[int, str]]:
    """Each process of `pids` and every process it started, as (pid, role), leaving out
    those in `known`, this process and its ancestors. LoadTestError for a pid that is not
    running, or one with more than MAX_CHILDREN processes under it."""
    me = psutil.Process()
    skipped = {*known, me.pid, *(parent.pid for parent in me.parents())}
    found: list[tuple[int, str]] = []
    for pid in pids:
        read = _read(pid)
        if read is None:
            raise LoadTestError(f"--server-pid {pid}: no such process (or not readable)")
        role = role_of(*read)
        if pid not in skipped:
            found.append((pid, role))
            skipped.add(pid)
        children = _children(pid, role)
        if len(children) > MAX_CHILDREN:
            raise LoadTestError(
                f"--server-pid {pid} has {len(children)} processes under it, more than"
                f" {MAX_CHILDREN}: name the server processes themselves"
            )
        for child, child_role in children:
            if child not in skipped:
                found.append((child, child_role))
                skipped.add(child)
    return found


def servers_with_workers(processes: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Those of `processes` (pid, role) that are scriptgen servers, whose children are their
    workers (a core's provider workers, a gateway supervisor's workers)."""
    parents = set(_SUBCOMMAND_ROLES.values())
    return [(pid, role) for pid, role in processes if role in parents]


def children_of(processes: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """The processes each of `processes` (pid, role) started, at any depth, as (pid, role)."""
    return [child for pid, role in processes for child in _children(pid, role)]


def _children(pid: int, role: str) -> list[tuple[int, str]]:
    """The processes `pid` started, at any depth: a scriptgen server by its role, any other
    as `{role} worker` (a gateway's workers, a database's backends)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.Error, OSError):
        return []
    found = []
    for child in children:
        read = _read(child.pid)
        if read is not None:
            found.append((child.pid, scriptgen_role(read[0]) or f"{role} worker"))
    return found


def _serves(listening: str, host: str) -> bool:
    """Whether a socket listening on address `listening` answers connections to `host`."""
    try:
        bound = plain_ip(listening)
    except ValueError:
        return False
    if bound.is_unspecified:
        return True  # 0.0.0.0 or ::, every address of the machine
    if host.lower() == "localhost":
        return bound.is_loopback
    try:
        return bound == plain_ip(host)
    except ValueError:
        return False


def _connections() -> list[psutil._ntuples.sconn]:
    try:
        return psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []


def _port(address: object) -> int | None:
    """The port of a psutil address; None for the empty address of an unbound socket."""
    port = getattr(address, "port", None)
    return port if isinstance(port, int) else None


def _ip(address: object) -> str:
    return str(getattr(address, "ip", ""))
