"""`make bench`: run the documented load scenarios several times and print their medians.

    python -m scriptgen.loadtest.bench [--runs 3] [--out bench-results] [--only NAME ...]
                                       [--mode naive|coalesced|both]

Each run is `scriptgen loadtest --spawn …` in its own process (fresh servers
every time), writing `NAME-MODE-RUN.json` and `.png` into --out. Every scenario
runs in each chosen mode (`MODES`): `naive` is the per-token relay the project
started from (a TextDelta per token, asyncio loops, one gateway process),
`coalesced` the servers' current defaults. With both, the runs alternate between the
modes, so a change in the machine's load hits both alike, and the table at the
end has each figure's median (min - max) per mode and their ratio.

Ctrl-C (or SIGTERM, SIGHUP) stops the sweep: the run in progress stops its servers
and removes its temporary folder (the load tool's own stop, waited for up to
`STOP_SECONDS`), no further run starts, and the command exits with status 128 + the
signal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scriptgen.cli.loadtest import STOP_SIGNALS  # a sweep stops on the load tool's signals
from scriptgen.loadtest._lifetime import parent_death_signal

#: How each mode starts the servers: extra flags of `scriptgen server` and `scriptgen gateway`.
MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "naive": (
        ("--delta-window-ms=0", "--event-loop=asyncio"),
        ("--event-loop=asyncio", "--workers=1", "--core-relay-calls=0"),
    ),
    # The servers' defaults (TextDeltas coalesced by --delta-window-ms, uvloop), one
    # gateway process per CPU of this 2-core machine class, and the core's model calls in
    # two provider workers, one per CPU, as deployed (deploy/k8s/base/core-deployment.yaml):
    # in a burst of 200 real provider jobs one worker's requests were the longest step,
    # while the other CPU idled (BENCHMARKS.md, session 39). A core of the synthetic writer
    # alone starts no worker.
    "coalesced": (("--provider-workers=2",), ("--workers=2",)),
}

#: Episodes of a realistic length (20 minutes, about 2,800 tokens): a 30 tok/s stream then
#: lasts ~90 s, as a real one would, instead of a 190-token demo whose per-job work
#: (plan, save, index) would dominate. Used by the paced and peak scenarios.
LONG_EPISODES = "--server-arg=--synthetic-episode-minutes=20"

#: The scenarios of BENCHMARKS.md: name → the arguments of `scriptgen loadtest`.
SCENARIOS: dict[str, str] = {
    "sse-single-stream": "--spawn --streams 1 --ttft 0.3 --tokens-per-second 30 --duration 60",
    "sse-1000-at-30": (
        "--spawn --streams 1000 --ttft 0.3 --tokens-per-second 30 --projects 10 --duration 180"
        f" {LONG_EPISODES}"
    ),
    "sse-burst-200": (
        "--spawn --streams 200 --ttft 0.3 --tokens-per-second 30 --projects 10 --duration 120"
        f" {LONG_EPISODES}"
    ),
    "sse-ramp-1000": (
        "--spawn --streams 1000 --ramp-seconds 30 --ttft 0.3 --tokens-per-second 30"
        f" --projects 10 --duration 180 {LONG_EPISODES}"
    ),
    "grpc-1000-at-30": (
        "--spawn --protocol grpc --streams 1000 --ttft 0.3 --tokens-per-second 30 --projects 10"
        f" --duration 180 {LONG_EPISODES}"
    ),
    "sse-peak-relay": (
        "--spawn --streams 200 --ttft 0 --tokens-per-second 0 --projects 10 --duration 120"
        f" {LONG_EPISODES}"
    ),
    # The same, but the writer hands over one token per chunk, as a model does: the relay
    # (coalescer included) does all the batching.
    "sse-peak-relay-per-token": (
        "--spawn --streams 200 --ttft 0 --tokens-per-second 0 --projects 10 --duration 120"
        f" {LONG_EPISODES} --server-arg=--synthetic-unpaced-chunk-tokens=1"
    ),
    "grpc-peak-relay": (
        "--spawn --protocol grpc --streams 200 --ttft 0 --tokens-per-second 0 --projects 10"
        f" --duration 120 {LONG_EPISODES}"
    ),
    "sse-idle-1000": (
        "--spawn --streams 1000 --ttft 120 --hold 20 --ramp-seconds 10 --projects 10 --duration 90"
    ),
    # The real provider path: gateway SSE -> core -> `openai` SDK -> a stand-in process
    # streaming one token per chunk at 30 tok/s; its time to first token is 0, so TTFT is
    # the service's own. One model call per job (the plan stays on the unpaced synthetic).
    "sse-openai-200": (
        "--spawn --provider openai-standin --streams 200 --ttft 0 --tokens-per-second 30"
        " --reply-tokens 600 --projects 10 --duration 120"
    ),
    # The same 200 streams started over 10 s (20 a second): all 200 are open from 10 s to
    # 20 s, so each stream's first token is timed while up to 199 others stream.
    "sse-openai-200-ramp": (
        "--spawn --provider openai-standin --streams 200 --ramp-seconds 10 --ttft 0"
        " --tokens-per-second 30 --reply-tokens 600 --projects 10 --duration 120"
    ),
    # The same with the core on Redis (event log, job registry, coordination), as replicas
    # run: a Redis on 127.0.0.1:6379, keys under their own prefix, kept 60 s after a job.
    "sse-openai-200-redis": (
        "--spawn --provider openai-standin --streams 200 --ttft 0 --tokens-per-second 30"
        " --reply-tokens 600 --projects 10 --duration 120"
        " --server-arg=--redis-url=redis://127.0.0.1:6379/0"
        " --server-arg=--redis-key-prefix=scriptgen-bench:"
        " --server-arg=--event-retention-seconds=60"
    ),
    # Idle streams whose write call waits on the stand-in: core, gateway and an open HTTP
    # request to the model per stream.
    "sse-openai-idle-1000": (
        "--spawn --provider openai-standin --streams 1000 --ttft 120 --hold 20"
        " --ramp-seconds 10 --projects 10 --duration 90"
    ),
}


def figure(path: str) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        value: Any = document
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return read


def latency(name: str, percentile: str) -> Callable[[dict[str, Any]], float | None]:
    """A latency percentile in ms; None when the run had no sample of it (e.g. idle streams)."""
    count = figure(f"latency_ms.{name}.count")
    value = figure(f"latency_ms.{name}.{percentile}")
    return lambda document: value(document) if count(document) else None


def per_role(role: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    """`key` summed over the processes of `role`, its workers included (e.g. `gateway worker`)."""

    def read(document: dict[str, Any]) -> float | None:
        values = [
            float(p[key])
            for p in document.get("processes", [])
            if p["role"].split(" ")[0] == role and p.get(key) is not None
        ]
        return sum(values) if values else None

    return read


def role_peak_rss(role: str) -> Callable[[dict[str, Any]], float | None]:
    """The most memory `role`'s processes held at one moment (the report's `roles`); for a
    report from before it had them, the sum of each process's own peak."""

    def read(document: dict[str, Any]) -> float | None:
        if "roles" not in document:
            return per_role(role, "rss_peak_bytes")(document)
        peak = document["roles"].get(role, {}).get("rss_peak_bytes")
        return None if peak is None else float(peak)

    return read


def _both(
    *reads: Callable[[dict[str, Any]], float | None],
) -> Callable[[dict[str, Any]], float | None]:
    def read(document: dict[str, Any]) -> float | None:
        values = [read(document) for read in reads]
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    return read


def _per_token(
    cpu: Callable[[dict[str, Any]], float | None],
) -> Callable[[dict[str, Any]], float | None]:
    """CPU microseconds per delivered token."""

    def read(document: dict[str, Any]) -> float | None:
        seconds = cpu(document)
        tokens = figure("throughput.tokens_delivered")(document)
        if seconds is None or not tokens:
            return None
        return seconds * 1e6 / tokens

    return read


def error_count(document: dict[str, Any]) -> float:
    return float(sum(document.get("errors", {}).values()))


#: Columns of the medians table: label → how to read it from a run's JSON.
FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "completed": figure("outcomes.completed"),
    "cut": figure("outcomes.cut"),
    "errors": error_count,
    "TTFE p50 ms": latency("time_to_first_event", "p50"),
    "TTFE p95 ms": latency("time_to_first_event", "p95"),
    "TTFE p99 ms": latency("time_to_first_event", "p99"),
    "TTFT p50 ms": latency("time_to_first_token", "p50"),
    "TTFT p95 ms": latency("time_to_first_token", "p95"),
    "TTFT p99 ms": latency("time_to_first_token", "p99"),
    "write->token p50 ms": latency("write_stage_to_first_token", "p50"),
    "write->token p95 ms": latency("write_stage_to_first_token", "p95"),
    "last token->completed p50 ms": latency("last_token_to_completed", "p50"),
    "last token->completed p95 ms": latency("last_token_to_completed", "p95"),
    "ITL p50 ms": latency("inter_token_latency", "p50"),
    "ITL p95 ms": latency("inter_token_latency", "p95"),
    "ITL p99 ms": latency("inter_token_latency", "p99"),
    "longest gap max ms": latency("longest_gap_between_deltas", "max"),
    "tok/s total": figure("throughput.delivered_tokens_per_second"),
    "tok/s peak": figure("throughput.peak_tokens_per_second"),
    "tok/s per stream p50": figure("throughput.stream_tokens_per_second.p50"),
    "core CPU s": per_role("core", "cpu_seconds"),
    "core peak RSS MiB": lambda d: _mib(role_peak_rss("core")(d)),
    "gateway CPU s": per_role("gateway", "cpu_seconds"),
    "gateway peak RSS MiB": lambda d: _mib(role_peak_rss("gateway")(d)),
    "core us CPU/token": _per_token(per_role("core", "cpu_seconds")),
    "gateway us CPU/token": _per_token(per_role("gateway", "cpu_seconds")),
    # A worker a server started during the run (one exited): the run's figures include
    # the restart; its CPU counts, and its memory counts while it and the others ran.
    "processes started mid-run": lambda d: (
        float(sum(1 for p in d["processes"] if p.get("started_during_run")))
        if "processes" in d
        else None
    ),
    "machine speed loop s": figure("machine.speed_loop_seconds"),
    "machine CPU busy % mean": figure("machine.cpu_during_run.busy_percent_mean"),
    "machine CPU busy % peak": figure("machine.cpu_during_run.busy_percent_peak"),
    "core+gateway us CPU/token": _per_token(
        _both(per_role("core", "cpu_seconds"), per_role("gateway", "cpu_seconds"))
    ),
    "core KiB/idle stream": lambda d: _kib(per_role("core", "hold_bytes_per_stream")(d)),
    "gateway KiB/idle stream": lambda d: _kib(per_role("gateway", "hold_bytes_per_stream")(d)),
    "core+gateway KiB/idle stream": lambda d: _kib(
        _both(
            per_role("core", "hold_bytes_per_stream"), per_role("gateway", "hold_bytes_per_stream")
        )(d)
    ),
}


def _mib(value: float | None) -> float | None:
    return None if value is None else value / (1024 * 1024)


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def medians(documents: Sequence[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """(median, min, max) of each figure over the runs that have it."""
    table = {}
    for label, read in FIGURES.items():
        values = [v for v in (read(d) for d in documents) if v is not None]
        if values:
            table[label] = (statistics.median(values), min(values), max(values))
    return table


def side_by_side(
    tables: dict[str, dict[str, tuple[float, float, float]]],
) -> list[str]:
    """Lines of a table: each figure's median (min - max) per mode, and coalesced / naive."""
    modes = list(tables)
    labels = [label for label in FIGURES if any(label in table for table in tables.values())]
    head = f"  {'figure':<30}" + "".join(f"{mode:>30}" for mode in modes)
    ratio = len(modes) == 2
    lines = [head + (f"{modes[1] + '/' + modes[0]:>22}" if ratio else "")]
    for label in labels:
        cells = []
        for mode in modes:
            found = tables[mode].get(label)
            cells.append(f"{found[0]:>12.1f} ({found[1]:.1f} - {found[2]:.1f})" if found else "—")
        line = f"  {label:<30}" + "".join(f"{cell:>30}" for cell in cells)
        if ratio:
            first, second = (tables[mode].get(label) for mode in modes)
            line += f"{second[0] / first[0]:>21.2f}x" if first and second and first[0] else ""
        lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scriptgen.loadtest.bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument(
        "--mode",
        choices=[*MODES, "both"],
        default="both",
        help="naive: per-token relay; coalesced: the current defaults; both (default)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds per run instead of each scenario's own (a shorter sweep)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for the core in every run, after the mode's (e.g."
        " --server-arg=--provider-workers=1); repeatable",
    )
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for the gateway in every run, after the mode's; repeatable",
    )
    parser.add_argument(
        "--summarize", action="store_true", help="only print the medians of the JSON in --out"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return until_stopped("bench", "no medians", lambda: _sweep(args))


def _sweep(args: argparse.Namespace) -> int:
    """Every chosen scenario's runs in every chosen mode, then their medians; 1 when a run
    could not be made."""
    names = args.only or list(SCENARIOS)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    failed = False
    for name in names:
        documents: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for run in range(1, args.runs + 1):
            for mode in modes:
                stem = args.out / f"{name}-{mode}-{run}"
                if not args.summarize:
                    extra = (tuple(args.server_arg), tuple(args.gateway_arg))
                    failed = _run(name, mode, run, stem, args.duration, extra) or failed
                if stem.with_suffix(".json").exists():
                    documents[mode].append(json.loads(stem.with_suffix(".json").read_text()))
        runs = ", ".join(f"{len(documents[mode])} {mode}" for mode in modes)
        print(f"\n## {name}: median (min - max) of {runs} runs")
        for line in side_by_side({mode: medians(documents[mode]) for mode in modes}):
            print(line)
        loads = [
            d["machine"]["load_average_at_end"][0]
            for mode in modes
            for d in documents[mode]
            if "machine" in d
        ]
        if loads:
            print(f"  1-min load average at the end of the runs: {min(loads)} - {max(loads)}")
        print()
    return 1 if failed else 0


def _run(
    name: str,
    mode: str,
    run: int,
    stem: Path,
    duration: float | None = None,
    extra: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> bool:
    """One run of `name` in `mode`, with `extra` server and gateway flags after the mode's;
    True when the load tool could not run it."""
    server_args, gateway_args = (
        (*MODES[mode][0], *extra[0]),
        (*MODES[mode][1], *extra[1]),
    )
    arguments = [
        *shlex.split(SCENARIOS[name]),
        *(f"--server-arg={flag}" for flag in server_args),
        *(f"--gateway-arg={flag}" for flag in gateway_args),
        *([f"--duration={duration:g}"] if duration else []),
    ]
    return not run_loadtest(arguments, stem, f"{name} [{mode}] run {run}")


def run_loadtest(arguments: Sequence[str], stem: Path, label: str) -> bool:
    """`scriptgen loadtest ARGUMENTS` in its own process, its JSON and PNG at `stem`.

    True when the tool ran (exit status 0, or 1 for a run with failed streams).
    """
    command = [
        sys.executable,
        "-m",
        "scriptgen",
        "loadtest",
        *arguments,
        "--quiet",
        f"--json={stem}.json",
        f"--chart={stem}.png",
    ]
    print(f"== {label}: scriptgen loadtest {shlex.join(arguments)}")
    sys.stdout.flush()
    # Stopped with this process (SIGTERM when it ends): the tool then stops its servers.
    tool: subprocess.Popen[bytes] | None = None
    try:
        tool = subprocess.Popen(command, preexec_fn=parent_death_signal())
        status = tool.wait()
    except (Stopped, KeyboardInterrupt) as stopped:
        if tool is not None:
            _stop(tool, stopped.signum if isinstance(stopped, Stopped) else signal.SIGINT)
        # Else it stopped as it started: the tool, if it began, gets the parent-death signal.
        raise
    return status in (0, 1)


#: How long a stopped run may take to stop its servers before it is killed.
STOP_SECONDS = 60.0


class Stopped(Exception):
    """One of STOP_SIGNALS came."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(signum.name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    _ignore_stop_signals()
    raise Stopped(signal.Signals(signum))


def _ignore_stop_signals() -> None:
    """From here every stop signal is ignored, so none cuts short the wait for the run's
    own stop; held back while the handlers give way, so none lands on one half-changed."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for ignored in STOP_SIGNALS:
        signal.signal(ignored, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)


def until_stopped(command: str, lost: str, sweep: Callable[[], int]) -> int:
    """`sweep()`'s exit status; if one of STOP_SIGNALS came, 128 + the signal, said on
    stderr with what is `lost` (the run in progress stopped as `run_loadtest` stops it)."""
    try:
        with stop_signals():
            return sweep()
    except Stopped as stopped:
        print(f"{command}: stopped by {stopped.signum.name}; {lost}", file=sys.stderr)
        return 128 + stopped.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While in it, the first of STOP_SIGNALS raises Stopped and later ones are ignored;
    the handlers before are restored after. A signal this process was started ignoring
    (`nohup`: SIGHUP) stays ignored."""
    before = {
        signum: signal.signal(signum, _raise_stopped)
        for signum in STOP_SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _stop(tool: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Let a run stop as it does on `signum`, its servers and folder included.

    A terminal's Ctrl-C reaches the tool too (one process group); a signal sent to this
    process alone is passed on, and the tool ignores the second. `subprocess.run` would
    have killed it 0.25 s after a Ctrl-C, in the middle of that stop."""
    _ignore_stop_signals()  # done already, unless a KeyboardInterrupt came
    with contextlib.suppress(ProcessLookupError):
        tool.send_signal(signum)
    try:
        tool.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        tool.kill()  # its servers end by the parent-death signal
        tool.wait()


if __name__ == "__main__":
    sys.exit(main())
