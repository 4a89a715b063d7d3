"""Item 9, `make soak`: a core under steady load for minutes, its resources sampled.

Not a test module (pytest does not collect it). Two modes:

* `python -m tests.faults.soak core SECONDS [core flags]` — a core (the `scriptgen
  server` flags) that prints `gRPC <address>` once listening, then every SECONDS a
  `sample {"rss": bytes, "fds": n, "tasks": n}` line about itself, until SIGTERM.
* `python -m tests.faults.soak run --seconds 600 --streams 50` — starts the `core` mode
  as a child, keeps `--streams` generations open at all times (each reader starts a
  new job when its last one completes) through a warm-up and then a measured window of
  `--seconds`, and checks: no error, resident memory at the end of the window within
  `--max-rss-growth` of its level at the start, open file descriptors and asyncio tasks
  flat. Prints one JSON summary; exit status 1 on failure.

The warm-up rule is fixed before a run, not fitted to it. The window opens when all three
hold, checked once a second:

1. `--warmup` seconds have passed (default: the readers' spread start plus one job);
2. the core keeps its full retention of finished jobs (`--finished-jobs-kept`), whose
   growth is by design;
3. resident memory has levelled off: the median of the core's samples over the last
   `--level-seconds` is at most `--level-percent` above the median over the
   `--level-seconds` before them.

A warm-up that has not met them after `--max-warmup` seconds is itself a failure (memory
that never levels off is the leak a soak is for); the window then opens anyway, so the
figures are still printed.

The window's growth compares two levels, each the median of `--level-seconds` of
samples: the last before the window opened, and the last before it closed (the core's
RSS swings a few percent within a minute as jobs start and end together, so a level
read from a few samples measures the swing, not growth).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _core(sample_seconds: float, argv: list[str]) -> int:
    from server import Core
    from server import config as core_config

    parser = argparse.ArgumentParser(prog="soak core")
    core_config.add_arguments(parser, {})
    settings = core_config.from_arguments(parser.parse_args(argv))
    core = Core(settings)
    await core.start()
    print(f"gRPC 127.0.0.1:{core.grpc_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            sample = {
                "rss": _rss(),
                "fds": len(os.listdir("/proc/self/fd")),
                "tasks": len(asyncio.all_tasks()),
                # Finished jobs whose events the in-memory log still keeps (-1: another log).
                "finished": getattr(core.event_log, "finished_kept", -1),
            }
            print(f"sample {json.dumps(sample)}", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), sample_seconds)
    finally:
        await core.stop(grace=1.0)
    return 0


@dataclass
class Summary:
    """What a soak run held, saw and concluded."""

    seconds: float
    streams: int
    jobs_completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    rss_after_warmup_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_growth_percent: float = 0.0
    fds_after_warmup: int = 0
    fds_end: int = 0
    tasks_after_warmup: float = 0.0
    tasks_end: float = 0.0
    #: When the measured window began, seconds after the load started.
    window_start_seconds: float = 0.0
    #: Which warm-up conditions held when the window opened.
    warmup_met: dict[str, bool] = field(default_factory=dict)
    #: For comparison with earlier runs: growth from the moment the retention was full.
    rss_growth_since_retention_full_percent: float = 0.0
    #: Resident MiB about every 30 s, from the first sample to the last.
    rss_timeline_mib: list[float] = field(default_factory=list)
    #: Index in `rss_timeline_mib` of the first entry inside the window.
    rss_timeline_window_index: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class _Clock:
    """When the readers stop starting jobs; moved once the window's start is known."""

    until: float


async def _load(
    target: str,
    streams: int,
    clock: _Clock,
    summary: Summary,
    project_count: int,
    spread_seconds: float,
    job_timeout: float,
) -> None:
    from grpc import aio
    from scriptgen.v1 import generation_service_pb2 as gs

    from tests.server.rpc import connect

    async with connect(target) as rpc:
        projects = [(await rpc.create_project(f"Soak {n}")).name for n in range(project_count)]

        async def reader(number: int) -> None:
            # Readers start spread over about one job's length, so jobs do not begin and end
            # in step and the core's memory is sampled at a steady state, not on a saw-tooth.
            await asyncio.sleep(spread_seconds * number / streams)
            for round_number in range(100_000):  # bounded; the clock ends it first
                if time.monotonic() >= clock.until:
                    return
                request = gs.GenerateScriptRequest(
                    parent=projects[number % len(projects)], title=f"Soak {number}.{round_number}"
                )
                kind = "none"
                try:
                    async with asyncio.timeout(job_timeout):
                        async for response in rpc.generations.GenerateScript(request):
                            kind = response.event.WhichOneof("kind") or kind
                except (aio.AioRpcError, TimeoutError) as error:
                    name = type(error).__name__
                    code = error.code().name if isinstance(error, aio.AioRpcError) else name
                    summary.errors[code] = summary.errors.get(code, 0) + 1
                    await asyncio.sleep(1)
                    continue
                if kind == "completed":
                    summary.jobs_completed += 1
                else:
                    summary.errors[kind] = summary.errors.get(kind, 0) + 1

        await asyncio.gather(*(reader(n) for n in range(streams)))


def _episode_seconds(args: argparse.Namespace) -> float:
    """How long one job writes: the synthetic writer's ~140 tokens a minute of screen time."""
    return float(args.episode_minutes * 140 / max(args.tokens_per_second, 1.0))


def _level(samples: list[dict[str, int]], key: str, count: int = 3) -> float:
    """Median of the last `count` samples: one sample catches a job boundary."""
    return statistics.median(s[key] for s in samples[-count:])


def _levelled(samples: list[dict[str, int]], count: int, percent: float) -> bool:
    """Whether the median RSS of the last `count` samples is within `percent` of the
    median of the `count` before them (rule 3 of the warm-up)."""
    if count < 1 or len(samples) < 2 * count:
        return False
    recent = statistics.median(s["rss"] for s in samples[-count:])
    before = statistics.median(s["rss"] for s in samples[-2 * count : -count])
    return recent <= before * (1 + percent / 100)


async def _run(args: argparse.Namespace) -> int:
    summary = Summary(seconds=args.seconds, streams=args.streams)
    sample_seconds = min(5.0, args.seconds / 30)
    level_count = max(1, round(args.level_seconds / sample_seconds))
    job_timeout = args.job_timeout or 60 + 3 * _episode_seconds(args)
    retention_full_at: list[dict[str, int]] = []
    with TemporaryDirectory(prefix="scriptgen-soak-") as data_dir:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.faults.soak",
            "core",
            str(sample_seconds),
            "--grpc-address=127.0.0.1:0",
            "--metrics-address=off",
            "--auth=disabled",
            f"--data-dir={data_dir}",
            f"--synthetic-first-token-seconds={args.ttft}",
            f"--synthetic-tokens-per-second={args.tokens_per_second}",
            f"--synthetic-episode-minutes={args.episode_minutes}",
            f"--max-streams={args.capacity}",
            "--heartbeat-seconds=1",
            *args.core_arg,
            stdout=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("SCRIPTGEN_")},
        )
        assert child.stdout is not None
        samples: list[dict[str, int]] = []
        try:
            async with asyncio.timeout(60):
                line = (await child.stdout.readline()).decode()
            if not line.startswith("gRPC "):
                raise RuntimeError(f"the core did not start: {line!r}")
            target = line.split()[1]

            async def collect() -> None:
                assert child.stdout is not None
                while raw := await child.stdout.readline():
                    text = raw.decode()
                    if text.startswith("sample "):
                        samples.append(json.loads(text.removeprefix("sample ")))

            collector = asyncio.create_task(collect())
            started = time.monotonic()
            # Warm-up (the rule in the module docstring): the readers run on until the
            # window's end, which is set once the window opens.
            clock = _Clock(until=started + args.max_warmup + args.seconds)
            load = asyncio.create_task(
                _load(
                    target,
                    args.streams,
                    clock,
                    summary,
                    args.projects,
                    args.spread_seconds,
                    job_timeout,
                )
            )
            warmup = (
                args.warmup
                if args.warmup is not None
                else args.spread_seconds + _episode_seconds(args)
            )
            met = {"time": False, "retention": False, "rss_levelled": False}
            for _ in range(int(args.max_warmup) + 1):  # bounded by --max-warmup
                elapsed = time.monotonic() - started
                kept = samples[-1].get("finished", -1) if samples else -1
                met["time"] = elapsed >= warmup
                met["retention"] = kept < 0 or kept >= args.finished_jobs_kept
                if met["retention"] and not retention_full_at:
                    retention_full_at.extend(samples[-level_count:])
                met["rss_levelled"] = _levelled(samples, level_count, args.level_percent)
                if all(met.values()) or elapsed >= args.max_warmup:
                    break
                await asyncio.sleep(1)
            summary.warmup_met = dict(met)
            if not all(met.values()):
                summary.failures.append(
                    f"warm-up conditions not met after {args.max_warmup:.0f} s: {met}"
                )
            window_start = time.monotonic()
            summary.window_start_seconds = round(window_start - started, 1)
            clock.until = window_start + args.seconds
            after_warmup = list(samples)
            # The end level is read when the clock runs out, with every stream still open;
            # afterwards the readers only finish the jobs they have.
            await asyncio.sleep(max(0.0, clock.until - time.monotonic()))
            end = list(samples)
            await asyncio.wait_for(load, job_timeout + 60)
            child.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await child.wait()
                await collector
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    step = max(1, round(30 / sample_seconds))
    summary.rss_timeline_mib = [round(sample["rss"] / 2**20, 1) for sample in samples[::step]]
    summary.rss_timeline_window_index = -(-len(after_warmup) // step)
    if len(after_warmup) < 3 or len(end) < len(after_warmup) + 3:
        summary.failures.append("too few resource samples")
    else:
        # RSS levels are medians over --level-seconds (as in the warm-up's rule): the
        # core's RSS swings a few percent within a minute as jobs start and end together.
        rss0 = _level(after_warmup, "rss", level_count)
        rss1 = _level(end, "rss", level_count)
        summary.rss_after_warmup_mib = round(rss0 / 2**20, 1)
        summary.rss_end_mib = round(rss1 / 2**20, 1)
        summary.rss_growth_percent = round(100 * (rss1 - rss0) / rss0, 2)
        if len(retention_full_at) >= 1:
            full = _level(retention_full_at, "rss", level_count)
            summary.rss_growth_since_retention_full_percent = round(100 * (rss1 - full) / full, 2)
        summary.fds_after_warmup = int(_level(after_warmup, "fds"))
        summary.fds_end = int(_level(end, "fds"))
        summary.tasks_after_warmup = _level(after_warmup, "tasks")
        summary.tasks_end = _level(end, "tasks")
        if summary.rss_growth_percent >= args.max_rss_growth:
            summary.failures.append(f"resident memory grew {summary.rss_growth_percent} %")
        if summary.fds_end > summary.fds_after_warmup + 5:
            summary.failures.append("file descriptors grew")
        # Tasks: a few per open stream; allow a tenth of a stream's worth of drift each.
        if summary.tasks_end > summary.tasks_after_warmup * 1.1 + 5:
            summary.failures.append("asyncio tasks grew")
    if summary.errors:
        summary.failures.append(f"errors: {summary.errors}")
    if summary.jobs_completed == 0:
        summary.failures.append("no job completed")
    print(json.dumps(asdict(summary), indent=2))
    return 1 if summary.failures else 0


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["core"]:
        return asyncio.run(_core(float(arguments[1]), arguments[2:]))
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak run")
    parser.add_argument("mode", choices=["run"])
    parser.add_argument(
        "--seconds", type=float, default=600.0, help="the measured window, after the warm-up"
    )
    parser.add_argument("--streams", type=int, default=50, help="held open at all times")
    parser.add_argument("--capacity", type=int, default=100, help="the core's --max-streams")
    parser.add_argument("--tokens-per-second", type=float, default=30.0)
    parser.add_argument("--ttft", type=float, default=0.3)
    parser.add_argument(
        "--episode-minutes",
        type=int,
        default=20,
        help="episode length: 20 minutes is ~2,800 tokens, a 90 s stream at 30 tok/s, as in"
        " the capacity sweep",
    )
    parser.add_argument(
        "--core-arg",
        action="append",
        default=[],
        help="an extra core flag, e.g. --core-arg=--event-retention-seconds=60 (repeatable)",
    )
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent")
    parser.add_argument(
        "--job-timeout",
        type=float,
        default=0.0,
        help="seconds one job may take before it counts as an error (default: 60 s + 3 x the"
        " episode's writing time)",
    )
    parser.add_argument(
        "--finished-jobs-kept",
        type=int,
        default=500,
        help="the core's retention of finished jobs (its default): the window waits for it",
    )
    parser.add_argument(
        "--projects",
        type=int,
        default=10,
        help="jobs spread over this many projects (story retrieval reads every episode"
        " summary of a project, so few projects make each job's plan stage grow)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="least seconds before the window (default: --spread-seconds plus one job)",
    )
    parser.add_argument(
        "--max-warmup",
        type=float,
        default=1200.0,
        help="seconds the warm-up may take before it counts as a failure",
    )
    parser.add_argument(
        "--level-seconds",
        type=float,
        default=60.0,
        help="RSS has levelled off when the median of this many seconds of samples ...",
    )
    parser.add_argument(
        "--level-percent",
        type=float,
        default=1.0,
        help="... is at most this much above the median of the same span before it",
    )
    parser.add_argument(
        "--spread-seconds",
        type=float,
        default=90.0,
        help="the readers' first jobs start evenly over this time (about one job's length)",
    )
    args = parser.parse_args(arguments)
    if not 1 <= args.streams <= 1000 or not 10 <= args.seconds <= 3600:
        parser.error("--streams must be 1..1000 and --seconds 10..3600")
    if not 0 <= args.max_warmup <= 3600:
        parser.error("--max-warmup must be 0..3600")
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
