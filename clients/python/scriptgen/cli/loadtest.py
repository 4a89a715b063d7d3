"""`scriptgen loadtest`: many concurrent generations against a local Scriptgen, measured.

    scriptgen loadtest --spawn --streams 200 --ttft 0.3 --tokens-per-second 30
    scriptgen loadtest --target-http http://127.0.0.1:8080 --streams 50 --ramp-seconds 10
    scriptgen loadtest --target-grpc 127.0.0.1:50051 --streams 100 --json run.json --chart run.png

Streams go through the gateway as SSE (--target-http) or straight to the core
over gRPC (--target-grpc); --spawn starts `scriptgen server` (and `scriptgen
gateway` for SSE) itself on free loopback ports with the synthetic writer at
--ttft and --tokens-per-second, and stops them afterwards. Streams start all
at once (burst), evenly over --ramp-seconds (ramp), and with --hold stay open
and idle once all have their first event, to measure memory per idle stream
(pair it with a long --ttft).

Measured: time to first event and to first token (from the request being sent),
inter-token latency (gap between deltas divided by the tokens they carry, one
sample per token), each stream's longest gap between deltas (a stall), tokens
per second in total and per stream, errors by kind,
and CPU and RSS of every server process (sampled). An external target's
processes are found by its port: every process listening on it (the workers of
a gateway started with --workers) and the loopback servers they are connected
to; --server-pid names more, each with the processes it started.

Only loopback targets are accepted (127.0.0.0/8, ::1, localhost). Runs are
bounded: at most 5000 streams, --duration at most 3600 s (streams still open
then are cut, which is not an error), --setup-timeout for everything before.
Exit status 0 when every stream completed or was cut, 1 when any failed or
the run could not be set up. Ctrl-C, SIGTERM and SIGHUP end a run: the servers
it started are stopped before it exits (status 128 + the signal). The
flags have no SCRIPTGEN_* variables: a load run is always spelled out.
BENCHMARKS.md lists the documented scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from scriptgen.cli._args import at_least_one
from scriptgen.cli._loop import default_event_loop
from scriptgen.cli._options import set_command
from scriptgen.cli._output import note, out
from scriptgen.cli._signals import give_way, is_own_command

if TYPE_CHECKING:
    # Loaded only when the command runs, so other commands start fast.
    from scriptgen.loadtest import LoadConfig, LoadReport


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """Add `loadtest`."""
    del environ  # every flag is spelled out on the command line (see the docstring)
    parser = commands.add_parser(
        "loadtest",
        help="run many concurrent generations against a local server and measure them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The clients run on uvloop where installed, as the servers and the client workers do.
    parser.set_defaults(event_loop=default_event_loop())
    where = parser.add_argument_group("target (exactly one)")
    choice = where.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--target-http", metavar="URL", help="a gateway, e.g. http://127.0.0.1:8080"
    )
    choice.add_argument("--target-grpc", metavar="HOST:PORT", help="a core, e.g. 127.0.0.1:50051")
    choice.add_argument(
        "--spawn", action="store_true", help="start a core (and gateway) on free ports for the run"
    )
    where.add_argument(
        "--protocol",
        choices=["sse", "grpc"],
        default=None,
        help="with --spawn: SSE through a gateway or gRPC to the core (default: sse)",
    )

    shape = parser.add_argument_group("load")
    shape.add_argument(
        "--streams", type=int, default=10, help="concurrent generations (default: 10)"
    )
    shape.add_argument(
        "--ramp-seconds",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the streams evenly over this period; 0 starts them at once (default: 0)",
    )
    shape.add_argument(
        "--hold",
        type=float,
        default=None,
        metavar="SECONDS",
        help="hold every stream open this long once all are open, then close them",
    )
    shape.add_argument(
        "--duration",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="cap on the run: open streams are cut then (default: 120, at most 3600)",
    )
    shape.add_argument(
        "--setup-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="cap on starting servers, readiness and creating projects (default: 60)",
    )
    shape.add_argument(
        "--projects",
        type=int,
        default=1,
        help="projects to spread the generations over (default: 1)",
    )
    shape.add_argument(
        "--workers",
        default="auto",
        help="client processes, 0 for this one; auto: 0 up to 200 streams, else one per 500"
        " up to the CPU count (default: auto)",
    )

    pace = parser.add_argument_group("servers started with --spawn")
    pace.add_argument(
        "--ttft",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time to first token (default: 0.3)",
    )
    pace.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="token rate, 0 unlimited (default: 30)",
    )
    pace.add_argument(
        "--tokens-per-chunk",
        type=int,
        default=None,
        help="tokens per delta, when the server has --synthetic-tokens-per-chunk",
    )
    pace.add_argument(
        "--provider",
        choices=["synthetic", "openai-standin"],
        default=None,
        help="the writer: the core's synthetic one (default), or the `openai` SDK against an"
        " OpenAI stand-in process streaming one token per chunk at --ttft/--tokens-per-second",
    )
    pace.add_argument(
        "--reply-tokens",
        type=int,
        default=None,
        help="tokens per stand-in reply, with --provider openai-standin (default: 600)",
    )
    pace.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag of `scriptgen server`, e.g. --server-arg=--delta-window-ms=0;"
        " repeatable",
    )
    pace.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag of `scriptgen gateway`; repeatable",
    )

    output = parser.add_argument_group("measurement and output")
    output.add_argument(
        "--server-pid",
        type=at_least_one,
        action="append",
        default=[],
        metavar="PID",
        help="also measure this process and the processes it started; repeatable",
    )
    output.add_argument(
        "--sample-interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="CPU/RSS sampling period (default: 0.5)",
    )
    output.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    output.add_argument("--chart", type=Path, metavar="FILE.png", help="draw the PNG chart")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    set_command(parser, run)


#: Signals that end a run, its servers stopped first: Ctrl-C, `kill`, `timeout`, a CI job's
#: cancellation, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stopped_by_signals(install: bool) -> Iterator[list[signal.Signals]]:
    """While in it, the first of STOP_SIGNALS cancels the current task; later ones are
    ignored, during the stop and after it, so that a second Ctrl-C does not cut short the
    stopping of the servers (which a cancellation does not either,
    `loadtest._lifetime.uninterrupted`). The list names the signal that came.

    Only when `install`: the process's own command. A caller of `run` in its own process
    (a test, an embedding) keeps its handlers, which removing ours would reset."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    came: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        if came or task is None or task.cancelling():
            return
        came.append(signum)
        task.cancel()

    installed = []
    for signum in STOP_SIGNALS if install else ():
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # started ignoring it (`nohup`: SIGHUP): it stays ignored
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
    try:
        yield came
    finally:
        # Stopping: another stop signal must not end the process before it exits.
        give_way(loop, installed, ignore=bool(came))


async def run(args: argparse.Namespace) -> int:
    """Build the run from the flags, run it, print and write the report."""
    from scriptgen import loadtest

    config = _config(args)
    report: LoadReport | None = None
    with _stopped_by_signals(install=_from_shell()) as came:
        try:
            report = await loadtest.run_load(config, progress=_progress(bool(args.quiet)))
        except asyncio.CancelledError:
            if not came:
                raise
    if report is None:
        return _stopped(came[0], "; no report")
    out(loadtest.summary(report))
    if args.json is not None:
        report.write_json(args.json)
        note(f"wrote {args.json}")
    if args.chart is not None:
        loadtest.write_chart(report, args.chart)
        note(f"wrote {args.chart}")
    if came:
        # The signal came as the run was ending, and its last wait did not see it.
        return _stopped(came[0], " as the run ended")
    return 1 if report.error_count else 0


def _stopped(signum: signal.Signals, how: str) -> int:
    """Say which signal stopped the run; the exit status a shell gives a death by it."""
    note(f"loadtest: stopped by {signum.name}{how}")
    return 128 + signum.value


def _progress(quiet: bool) -> Callable[[str], None]:
    def progress(line: str) -> None:
        if not quiet:
            note(f"loadtest: {line}")

    return progress


def _config(args: argparse.Namespace) -> LoadConfig:
    from scriptgen import loadtest

    pace_given = any(
        value is not None
        for value in (
            args.ttft,
            args.tokens_per_second,
            args.tokens_per_chunk,
            args.provider,
            args.reply_tokens,
        )
    )
    if (pace_given or args.protocol is not None) and not args.spawn:
        raise loadtest.LoadTestError(
            "--ttft, --tokens-per-second, --tokens-per-chunk, --provider, --reply-tokens and"
            " --protocol go with --spawn; a running server keeps its own settings"
        )
    target = None
    if args.target_http is not None:
        target = loadtest.parse_http_target(str(args.target_http))
    elif args.target_grpc is not None:
        target = loadtest.parse_grpc_target(str(args.target_grpc))
    protocol = target.protocol if target is not None else loadtest.Protocol(args.protocol or "sse")
    streams = int(args.streams)
    workers = str(args.workers)
    if workers == "auto":
        worker_count = loadtest.auto_workers(streams)
    elif workers.isdigit():
        worker_count = int(workers)
    else:
        raise loadtest.LoadTestError(f"--workers takes a number or auto, not {workers!r}")
    config = loadtest.LoadConfig(
        target=target,
        protocol=protocol,
        streams=streams,
        ramp_seconds=float(args.ramp_seconds),
        duration_seconds=float(args.duration),
        hold_seconds=None if args.hold is None else float(args.hold),
        setup_timeout_seconds=float(args.setup_timeout),
        projects=int(args.projects),
        workers=worker_count,
        spawn=bool(args.spawn),
        pace=loadtest.SyntheticPace(
            first_token_seconds=0.3 if args.ttft is None else float(args.ttft),
            tokens_per_second=30.0
            if args.tokens_per_second is None
            else float(args.tokens_per_second),
            tokens_per_chunk=args.tokens_per_chunk,
        ),
        provider=loadtest.ModelProvider(args.provider or "synthetic"),
        reply_tokens=600 if args.reply_tokens is None else int(args.reply_tokens),
        server_args=tuple(str(flag) for flag in args.server_arg),
        gateway_args=tuple(str(flag) for flag in args.gateway_arg),
        server_pids=tuple(int(pid) for pid in args.server_pid),
        sample_interval_seconds=float(args.sample_interval),
        command_line=("scriptgen", *sys.argv[1:]) if _from_shell() else (),
    )
    loadtest.check_bounds(config)
    return config


def _from_shell() -> bool:
    """Whether this process is the `scriptgen loadtest` command (not a test calling `run`)."""
    return is_own_command("loadtest")
