"""The figures of a run: built once from the records, written as text, JSON and a chart."""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scriptgen.loadtest._config import LoadConfig, ModelProvider, Target
from scriptgen.loadtest._processes import MachineSample, WatchedProcess
from scriptgen.loadtest._records import Outcome, StreamRecord, WorkerResult
from scriptgen.loadtest._stats import (
    Distribution,
    TimelinePoint,
    distribution,
    inter_token_latencies,
    longest_gap,
    stream_rate,
    timeline,
)

_MS = 1000.0
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HoldWindow:
    """When every stream was open and idle, and how many were."""

    start: float
    end: float
    open_streams: int


@dataclass(slots=True)
class LoadReport:
    """Everything a run measured. `to_json` is the `--json` document."""

    config: LoadConfig
    target: Target
    started_utc: str
    #: The projects the generations went to.
    projects: list[str]
    #: Monotonic start of the measured phase and end of the last stream.
    start: float
    end: float
    outcomes: dict[str, int]
    errors: dict[str, int]
    #: From the load tool beginning a stream to its request going out: the tool's own
    #: queueing (a burst's requests are prepared one after another in one loop).
    client_delay: Distribution
    #: A stream's TCP connection, begun to established (SSE; within `client_delay`).
    connect: Distribution
    time_to_headers: Distribution
    time_to_first_event: Distribution
    time_to_first_token: Distribution
    #: From the write stage's start to the first TextDelta: the writing call's own TTFT.
    write_to_first_token: Distribution
    #: From a completed stream's last TextDelta to its `completed` event: the review, save
    #: and indexing stages, which the reader waits out after the text.
    last_token_to_completed: Distribution
    inter_token_latency: Distribution
    #: Each stream's longest wait between two deltas (one sample per stream): a stall.
    longest_delta_gap: Distribution
    #: From the request to its failure, for streams that ended in an error (e.g. refused).
    time_to_error: Distribution
    stream_tokens_per_second: Distribution
    tokens_delivered: int
    deltas_delivered: int
    delivered_tokens_per_second: float
    peak_tokens_per_second: float
    completed_tokens: int
    saved_episode_tokens: int
    points: list[TimelinePoint]
    processes: list[WatchedProcess]
    workers: list[WorkerResult]
    hold: HoldWindow | None
    #: Readings of the whole machine's CPU time over the run.
    machine_samples: list[MachineSample]
    #: Seconds an empty loop of SPEED_LOOP_ITERATIONS took just before the measured phase.
    speed_loop_seconds: float | None = None
    #: Raw samples for the chart (seconds); not in the JSON.
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def process_figures(self) -> list[dict[str, Any]]:
        """CPU and memory of each process over the measured phase."""
        return [
            _process_figures(process, self.start, self.end, self.hold) for process in self.processes
        ]

    def role_figures(self) -> dict[str, dict[str, int]]:
        """Memory of each role's processes together (`gateway` with its workers, `core` with
        its provider workers): the most they held at one moment of the measured phase."""
        return _role_figures(self.processes, self.start, self.end)

    def machine_figures(self) -> dict[str, Any]:
        """How busy all of the machine's CPUs were over the measured phase (100 = all busy)."""
        return _machine_figures(self.machine_samples, self.start, self.end)

    def to_json(self) -> dict[str, Any]:
        config = self.config
        pace = asdict(config.pace) if config.spawn else None
        figures = self.process_figures()
        document: dict[str, Any] = {
            "command_line": list(config.command_line),
            "started_utc": self.started_utc,
            "machine": {
                **machine(),
                "cpu_during_run": self.machine_figures(),
                "speed_loop_seconds": None
                if self.speed_loop_seconds is None
                else round(self.speed_loop_seconds, 3),
                "speed_loop_iterations": SPEED_LOOP_ITERATIONS,
            },
            "run": {
                "target": str(self.target),
                "protocol": config.protocol.value,
                "mode": config.mode,
                "streams": config.streams,
                "ramp_seconds": config.ramp_seconds,
                "hold_seconds": config.hold_seconds,
                "duration_cap_seconds": config.duration_seconds,
                "projects": self.projects,
                "client_workers": config.workers,
                "spawned_servers": config.spawn,
                "synthetic_pace": pace,
                "provider": config.provider.value,
                "reply_tokens": config.reply_tokens
                if config.provider is not ModelProvider.SYNTHETIC
                else None,
                "server_args": list(config.server_args),
                "gateway_args": list(config.gateway_args),
                "measured_seconds": round(self.duration, 3),
            },
            "outcomes": self.outcomes,
            "errors": self.errors,
            "latency_ms": {
                "client_delay_before_send": self.client_delay.scaled(_MS),
                "connect": self.connect.scaled(_MS),
                "time_to_headers": self.time_to_headers.scaled(_MS),
                "time_to_first_event": self.time_to_first_event.scaled(_MS),
                "time_to_first_token": self.time_to_first_token.scaled(_MS),
                "write_stage_to_first_token": self.write_to_first_token.scaled(_MS),
                "last_token_to_completed": self.last_token_to_completed.scaled(_MS),
                "inter_token_latency": self.inter_token_latency.scaled(_MS),
                "longest_gap_between_deltas": self.longest_delta_gap.scaled(_MS),
                "time_to_error": self.time_to_error.scaled(_MS),
            },
            "throughput": {
                "tokens_delivered": self.tokens_delivered,
                "deltas_delivered": self.deltas_delivered,
                "delivered_tokens_per_second": round(self.delivered_tokens_per_second, 1),
                "peak_tokens_per_second": round(self.peak_tokens_per_second, 1),
                "stream_tokens_per_second": self.stream_tokens_per_second.scaled(1.0),
            },
            "consistency": {
                "completed_streams": self.outcomes.get(Outcome.COMPLETED.value, 0),
                "tokens_delivered_in_completed_streams": self.completed_tokens,
                "tokens_in_saved_episodes": self.saved_episode_tokens,
                "match": self.completed_tokens == self.saved_episode_tokens,
            },
            "processes": figures,
            "roles": self.role_figures(),
            "client_workers": [
                {
                    "pid": w.pid,
                    "cpu_seconds": round(w.cpu_seconds, 3),
                    "max_rss_bytes": w.max_rss_bytes,
                }
                for w in self.workers
            ],
            "timeline": [asdict(point) for point in self.points],
        }
        if self.hold is not None:
            document["hold"] = {
                "open_streams": self.hold.open_streams,
                "seconds": round(self.hold.end - self.hold.start, 3),
                "bytes_per_idle_stream": {
                    f"{f['role']} {f['pid']}": f.get("hold_bytes_per_stream") for f in figures
                },
            }
        return document

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What the run ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory = int(psutil.virtual_memory().total)
    except (ImportError, OSError):
        memory = 0
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        # Other work on the machine skews every figure: say how busy it was.
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


#: Turns of the empty Python loop that reads the machine's speed (`speed_loop_seconds`).
SPEED_LOOP_ITERATIONS = 10_000_000


def time_speed_loop(iterations: int = SPEED_LOOP_ITERATIONS) -> float:
    """Seconds this process takes for `iterations` turns of an empty Python loop.

    The same machine class runs from one session to the next, and even from one
    minute to the next, at speeds ~2x apart (BENCHMARKS.md): every figure of a run
    scales with it, so a run reads it once, just before its measured phase, and
    runs whose readings differ compare only with that in mind. The loop is the one
    BENCHMARKS.md's sessions timed by hand (`python3 -c 'for i in range(10_000_000):
    pass'`): run as module-level code, as `-c` runs it, so the readings compare.
    """
    code = compile(f"for i in range({int(iterations)}): pass", "<speed loop>", "exec")
    began = time.perf_counter()
    exec(code, {})  # a constant loop of our own, not input
    return time.perf_counter() - began


#: Readings closer than this give noise, not a rate (the final reading comes right after one).
_MIN_RATE_SECONDS = 0.2


def _machine_figures(samples: Sequence[MachineSample], start: float, end: float) -> dict[str, Any]:
    before = [s for s in samples if s.time <= start]
    during = [s for s in samples if start < s.time <= end + 1.0]
    if not before or not during:
        return {}
    cpus = os.cpu_count() or 1
    first, last = before[-1], during[-1]
    wall = max(1e-9, (last.time - first.time) * cpus)
    # The intervals cover the measured phase end to end (a short tail joins the interval
    # before it), so the mean is their weighted average and the peak is never below it.
    edges = [first]
    for sample in during:
        if sample.time - edges[-1].time >= _MIN_RATE_SECONDS:
            edges.append(sample)
    if len(edges) == 1:
        edges.append(last)
    else:
        edges[-1] = last
    peak = max(
        (b.busy_seconds - a.busy_seconds) / max(1e-9, (b.time - a.time) * cpus)
        for a, b in itertools.pairwise(edges)
    )
    return {
        "cpus": cpus,
        "busy_percent_mean": round(100 * (last.busy_seconds - first.busy_seconds) / wall, 1),
        "busy_percent_peak": round(100 * min(1.0, peak), 1),
        "steal_percent_mean": round(100 * (last.steal_seconds - first.steal_seconds) / wall, 1),
    }


def _process_figures(
    process: WatchedProcess, start: float, end: float, hold: HoldWindow | None
) -> dict[str, Any]:
    samples = process.samples
    before = [s for s in samples if s.time <= start]
    during = [s for s in samples if start <= s.time <= end + 1.0]
    first = before[-1] if before else (samples[0] if samples else None)
    last = during[-1] if during else (samples[-1] if samples else None)
    figures: dict[str, Any] = {"pid": process.pid, "role": process.role, "command": process.command}
    if process.started_during_run:
        figures["started_during_run"] = True
    if first is None or last is None:
        return figures
    wall = max(1e-9, last.time - first.time)
    cpu = last.cpu_seconds - first.cpu_seconds
    peak_percent = 0.0
    series = []
    previous = first
    for sample in during:
        # Readings closer than a few ms apart (the final one) would give noise, not a rate.
        if sample.time - previous.time >= 0.05:
            percent = (
                100 * (sample.cpu_seconds - previous.cpu_seconds) / (sample.time - previous.time)
            )
            peak_percent = max(peak_percent, percent)
            series.append([round(sample.time - start, 3), round(percent, 1), sample.rss_bytes])
            previous = sample
    figures.update(
        cpu_seconds=round(cpu, 3),
        cpu_percent_mean=round(100 * cpu / wall, 1),
        cpu_percent_peak=round(peak_percent, 1),
        rss_before_bytes=first.rss_bytes,
        rss_peak_bytes=max([s.rss_bytes for s in during] or [first.rss_bytes]),
        rss_after_bytes=last.rss_bytes,
        samples=series,
    )
    if hold is not None and hold.open_streams > 0:
        held = [s.rss_bytes for s in samples if hold.start <= s.time <= hold.end]
        if held:
            rss_held = int(statistics.median(held))
            figures["hold_rss_bytes"] = rss_held
            figures["hold_bytes_per_stream"] = round(
                (rss_held - first.rss_bytes) / hold.open_streams
            )
    return figures


def _role_figures(
    processes: Sequence[WatchedProcess], start: float, end: float
) -> dict[str, dict[str, int]]:
    """Per role (its first word: a `gateway worker` is the gateway's), the peak over the
    sampler's passes in the measured phase of the RSS its processes held in one pass. A
    sum of each process's own peak would count a worker that exited and the one started in
    its place as if both had run at once."""
    totals: dict[str, dict[int, int]] = {}
    for process in processes:
        role = process.role.split(" ")[0]
        by_sweep = totals.setdefault(role, {})
        for sample in process.samples:
            if sample.sweep >= 0 and start <= sample.time <= end + 1.0:
                by_sweep[sample.sweep] = by_sweep.get(sample.sweep, 0) + sample.rss_bytes
    return {
        role: {"rss_peak_bytes": max(by_sweep.values())}
        for role, by_sweep in sorted(totals.items())
        if by_sweep
    }


def build_report(
    config: LoadConfig,
    target: Target,
    started_utc: str,
    projects: Sequence[str],
    start: float,
    records: Sequence[StreamRecord],
    processes: list[WatchedProcess],
    workers: list[WorkerResult],
    hold: HoldWindow | None,
    machine_samples: Sequence[MachineSample] = (),
    speed_loop_seconds: float | None = None,
) -> LoadReport:
    ends = [r.ended for r in records if r.ended is not None]
    end = max(ends) if ends else start
    outcomes = Counter(r.outcome.value for r in records if r.began is not None)
    outcomes["not_started"] = sum(1 for r in records if r.began is None)
    errors = Counter(
        r.error for r in records if r.outcome in (Outcome.ERROR, Outcome.FAILED, Outcome.CANCELLED)
    )
    itl: list[float] = []
    for record in records:
        itl.extend(inter_token_latencies(record))
    ttfe = _since_sent(records, "first_event")
    ttft = _since_sent(records, "first_token")
    write_ttft = [
        r.first_token - r.write_started
        for r in records
        if r.first_token is not None and r.write_started is not None
    ]
    headers = _since_sent(records, "headers")
    client_delays = [
        r.sent - r.began for r in records if r.sent is not None and r.began is not None
    ]
    connects = [
        r.connected - r.connecting
        for r in records
        if r.connected is not None and r.connecting is not None
    ]
    refusals = [
        r.ended - r.sent
        for r in records
        if r.outcome is Outcome.ERROR and r.sent is not None and r.ended is not None
    ]
    rates = [rate for r in records if (rate := stream_rate(r)) is not None]
    gaps = [gap for r in records if (gap := longest_gap(r)) is not None]
    delta_times = [r.delta_times for r in records if r.delta_times]
    tokens = sum(r.tokens for r in records)
    first_delta = min((times[0] for times in delta_times), default=0.0)
    last_delta = max((times[-1] for times in delta_times), default=0.0)
    span = last_delta - first_delta
    points = timeline(records, start, end)
    completed = [r for r in records if r.outcome is Outcome.COMPLETED]
    finishing = [r.ended - r.delta_times[-1] for r in completed if r.ended and r.delta_times]
    return LoadReport(
        config=config,
        target=target,
        started_utc=started_utc,
        projects=list(projects),
        start=start,
        end=end,
        outcomes={name: count for name, count in sorted(outcomes.items()) if count},
        errors=dict(errors.most_common()),
        client_delay=distribution(client_delays),
        connect=distribution(connects),
        time_to_headers=distribution(headers),
        time_to_first_event=distribution(ttfe),
        time_to_first_token=distribution(ttft),
        write_to_first_token=distribution(write_ttft),
        last_token_to_completed=distribution(finishing),
        inter_token_latency=distribution(itl),
        longest_delta_gap=distribution(gaps),
        time_to_error=distribution(refusals),
        stream_tokens_per_second=distribution(rates),
        tokens_delivered=tokens,
        deltas_delivered=sum(len(r.delta_times) for r in records),
        delivered_tokens_per_second=tokens / span if span > 0 else 0.0,
        peak_tokens_per_second=max((p.tokens_per_second for p in points), default=0.0),
        completed_tokens=sum(r.tokens for r in completed),
        saved_episode_tokens=sum(r.episode_tokens or 0 for r in completed),
        points=points,
        processes=processes,
        workers=workers,
        hold=hold,
        machine_samples=list(machine_samples),
        speed_loop_seconds=speed_loop_seconds,
        samples={
            "time_to_first_event": ttfe,
            "time_to_first_token": ttft,
            "inter_token_latency": itl,
        },
    )


def _since_sent(records: Sequence[StreamRecord], moment: str) -> list[float]:
    """Seconds from each stream's request to its `moment` (a StreamRecord time field)."""
    spans = []
    for record in records:
        when: float | None = getattr(record, moment)
        if when is not None and record.sent is not None:
            spans.append(when - record.sent)
    return spans


def _ms(value: float) -> str:
    return f"{value * _MS:.1f}"


def _mib(value: int) -> str:
    return f"{value / _MIB:.1f} MiB"


def summary(report: LoadReport) -> str:
    """The report for people."""
    config = report.config
    lines = [
        f"scriptgen loadtest: {config.streams} {config.protocol.value.upper()} streams,"
        f" {config.mode} → {report.target} ({report.duration:.1f} s measured)",
        "outcomes: " + ", ".join(f"{name} {count}" for name, count in report.outcomes.items()),
    ]
    if report.errors:
        lines.append(
            "errors:   " + ", ".join(f"{kind} x{count}" for kind, count in report.errors.items())
        )
    lines.append(f"{'latency (ms)':<24}{'n':>7}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}")
    for name, dist in (
        ("tool's delay to send", report.client_delay),
        ("  of it, connecting", report.connect),
        ("time to headers", report.time_to_headers),
        ("time to first event", report.time_to_first_event),
        ("time to first token", report.time_to_first_token),
        ("write stage → token", report.write_to_first_token),
        ("last token → completed", report.last_token_to_completed),
        ("inter-token latency", report.inter_token_latency),
        ("longest gap per stream", report.longest_delta_gap),
        ("time to error", report.time_to_error),
    ):
        if dist.count:
            lines.append(
                f"{name:<24}{dist.count:>7}{_ms(dist.p50):>10}{_ms(dist.p95):>10}"
                f"{_ms(dist.p99):>10}{_ms(dist.max):>10}"
            )
    rate = report.stream_tokens_per_second
    lines.append(
        f"tokens: {report.tokens_delivered} in {report.deltas_delivered} deltas;"
        f" {report.delivered_tokens_per_second:.0f} tok/s delivered in total"
        f" (peak {report.peak_tokens_per_second:.0f} tok/s);"
        f" per stream p50 {rate.p50:.1f}, min {rate.min:.1f} tok/s"
    )
    match = "match" if report.completed_tokens == report.saved_episode_tokens else "MISMATCH"
    lines.append(
        f"saved episodes: {report.saved_episode_tokens} tokens, delivered in completed streams:"
        f" {report.completed_tokens} ({match})"
    )
    for figures in report.process_figures():
        if "cpu_seconds" not in figures:
            lines.append(f"process {figures['role']} {figures['pid']}: no samples")
            continue
        started = " (started during the run)" if figures.get("started_during_run") else ""
        line = (
            f"process {figures['role']} {figures['pid']}{started}:"
            f" CPU {figures['cpu_seconds']:.2f} s"
            f" (mean {figures['cpu_percent_mean']:.0f}%, peak {figures['cpu_percent_peak']:.0f}%),"
            f" RSS {_mib(figures['rss_before_bytes'])} → peak {_mib(figures['rss_peak_bytes'])}"
        )
        if "hold_bytes_per_stream" in figures:
            line += f", {figures['hold_bytes_per_stream'] / 1024:.1f} KiB per idle stream"
        lines.append(line)
    counts = Counter(process.role.split(" ")[0] for process in report.processes)
    for role, figures in report.role_figures().items():
        if counts[role] > 1:
            peak = _mib(figures["rss_peak_bytes"])
            lines.append(f"{role} processes together: RSS peak {peak} at one moment")
    box = report.machine_figures()
    if box:
        lines.append(
            f"machine: {box['cpus']} CPUs {box['busy_percent_mean']:.0f}% busy on average,"
            f" {box['busy_percent_peak']:.0f}% at peak, {box['steal_percent_mean']:.1f}% stolen"
        )
    if report.speed_loop_seconds is not None:
        lines.append(
            f"machine speed: an empty loop of {SPEED_LOOP_ITERATIONS:,} turns took"
            f" {report.speed_loop_seconds:.3f} s just before the run"
        )
    for worker in report.workers:
        lines.append(
            f"client worker {worker.pid}: CPU {worker.cpu_seconds:.2f} s,"
            f" peak RSS {_mib(worker.max_rss_bytes)}"
        )
    if report.hold is not None:
        lines.append(
            f"hold: {report.hold.open_streams} streams open and idle for"
            f" {report.hold.end - report.hold.start:.1f} s"
        )
    return "\n".join(lines)
