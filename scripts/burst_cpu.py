"""Each process's CPU over a load run's burst, in 25 ms steps: who holds the two CPUs.

    python scripts/burst_cpu.py --seconds 30 --json cpu.json &
    .venv/bin/scriptgen loadtest --spawn --provider openai-standin --streams 200 ...

It samples, every 5 ms, the CPU time of every process whose command line names
`scriptgen` (the core, the gateway and its workers, the load tool and its
clients, the OpenAI stand-in), read from `/proc/<pid>/task/*/schedstat` (all
threads, nanoseconds). Once the core (`scriptgen server`) has used under a
tenth of a CPU for QUIET_SECONDS (its start-up is over; it waits for the
gateway and the load), the burst's core work begins with the first 25 ms step
in which it used more than half a CPU; the burst itself began with the earliest
step before that in a row in which the run's processes together used more than
RUN_SHARE of a CPU (the load tool's sends and the gateway's parsing come first). When a
load tool is among them, the burst begins at the first of those steps in which it used
more than LEAD_SHARE: the gateway workers' own start-up, which may end just before the
load tool starts sending, is not the burst.
With `--by gateway` the gateway's processes mark the burst instead of the core: their
first step above GATEWAY_BURST_SHARE after the same pause. Use it when the core runs
provider workers (`--server-arg=--provider-workers=N`): the core waits idle for its
workers' start-up and then finishes its own, and that last busy step, not the burst, is
what the core's rule finds.
The report is each process's CPU milliseconds over
`--window` seconds from there, and the steps themselves as a table. Linux only.

The CPU of a process is that of its live threads: a thread that ends within a step takes
its time with it (such a step reads 0 for that process). A process counts over a span
only if it was running at both ends of it; children of children are not looked for.
"""

from __future__ import annotations

import argparse
import bisect
import json
import time
from collections.abc import Sequence
from pathlib import Path

STEP_SECONDS = 0.025
SAMPLE_SECONDS = 0.005
#: How often the process list is read again (new processes appear as the run starts).
SCAN_SECONDS = 0.5
#: The core's share of one CPU, in a step, that marks the burst's beginning, once it has
#: been under IDLE_SHARE for QUIET_SECONDS (a few CreateProject calls come before the burst).
BURST_SHARE = 0.5
QUIET_SECONDS = 0.3
IDLE_SHARE = 0.1
#: With `--by gateway`: the share of a CPU the gateway's processes together use in the
#: burst's first step of theirs (they parse the starts; the core's share is the larger).
#: 0.3 until session 40, when two gateway workers' first step of a 200-stream burst used
#: less than that and no burst was found.
GATEWAY_BURST_SHARE = 0.15
#: The roles of the processes whose first busy step after a pause marks the burst, and the
#: share of a CPU that step takes, by `--by`.
LEADS: dict[str, tuple[tuple[str, ...], float]] = {
    "core": (("core", "core+gateway"), BURST_SHARE),
    "gateway": (("gateway", "gateway child", "core+gateway"), GATEWAY_BURST_SHARE),
}
#: The share of a CPU that all processes together use in a step of the burst, at least.
RUN_SHARE = 0.3
#: The share of a CPU that the load tool and its clients use in a step of the burst's lead
#: (their sends), at least; waiting for the servers to be ready, they use next to none.
LEAD_SHARE = 0.1

Samples = list[tuple[float, dict[int, int]]]


def _processes() -> dict[int, str]:
    """The run's processes: those whose command names scriptgen, and their children (the
    load tool's client processes, started by multiprocessing)."""
    commands: dict[int, str] = {}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        commands[pid] = command
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state
    found = {
        pid: command
        for pid, command in commands.items()
        if "scriptgen" in command and "burst_cpu" not in command and "--help" not in command
    }
    for pid, parent in parents.items():
        if parent in found and pid not in found:
            found[pid] = f"{commands[pid]} (child of {parent}: {_role(found[parent])})"
    return found


def _cpu_ns(pid: int) -> int | None:
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def sample(seconds: float) -> tuple[dict[int, str], Samples]:
    """Every matching process's CPU nanoseconds, every SAMPLE_SECONDS for `seconds`."""
    names: dict[int, str] = {}
    samples: Samples = []
    end = time.monotonic() + seconds
    scanned = float("-inf")
    while (now := time.monotonic()) < end:
        if now - scanned >= SCAN_SECONDS:
            names.update(_processes())
            scanned = now
        readings = {pid: cpu for pid in names if (cpu := _cpu_ns(pid)) is not None}
        samples.append((now, readings))
        time.sleep(SAMPLE_SECONDS)
    return names, samples


def _role(command: str) -> str:
    if "(child of" in command:
        parent = command.rsplit(": ", 1)[-1].rstrip(")")
        return "load client" if parent == "load tool" else f"{parent} child"
    for needle, role in (
        ("_standin", "stand-in"),
        ("scriptgen server", "core"),
        ("scriptgen serve ", "core+gateway"),
        ("scriptgen gateway", "gateway"),
        ("loadtest", "load tool"),
    ):
        if needle in command:
            return role
    return command.split()[-1][:16]


def burst(
    names: dict[int, str], samples: Samples, window: float, by: str = "core"
) -> dict[str, object]:
    """Each process's CPU over `window` seconds from the burst's first step, the burst found
    by the processes `by` names (`LEADS`)."""
    times = [when for when, _ in samples]

    def used(pid: int, start: float, end: float) -> float:
        """CPU milliseconds of `pid` between two times (0 where it was not running)."""
        a = samples[min(bisect.bisect_left(times, start), len(samples) - 1)][1].get(pid)
        b = samples[min(bisect.bisect_left(times, end), len(samples) - 1)][1].get(pid)
        # A thread that exits takes its time out of the sum: never less than nothing.
        return 0.0 if a is None or b is None else max(0.0, (b - a) / 1e6)

    roles, burst_share = LEADS[by]
    cores = [pid for pid, command in names.items() if _role(command) in roles]
    if not cores or not samples:
        raise SystemExit(f"no {by} process was seen")

    def share(step: float, pids: Sequence[int] = cores) -> float:
        return sum(used(pid, step, step + STEP_SECONDS) for pid in pids) / (STEP_SECONDS * 1000)

    tools = [
        pid for pid, command in names.items() if _role(command) in ("load tool", "load client")
    ]

    begin = None
    quiet = 0.0
    step = min(next((t for t, seen in samples if pid in seen), times[-1]) for pid in cores)
    while step + STEP_SECONDS < times[-1]:
        now = share(step)
        if quiet >= QUIET_SECONDS and now > burst_share:
            begin = step
            while share(begin - STEP_SECONDS, list(names)) > RUN_SHARE:
                begin -= STEP_SECONDS
            if tools:
                # The first of those steps in which the tool sends: before it, the run was
                # busy with something else (the gateway workers' start-up).
                sending = begin
                while sending < step and share(sending, tools) <= LEAD_SHARE:
                    sending += STEP_SECONDS
                if sending < step:
                    begin = sending
            break
        if quiet < QUIET_SECONDS:
            quiet = quiet + STEP_SECONDS if now < IDLE_SHARE else 0.0
        step += STEP_SECONDS
    if begin is None:
        raise SystemExit(
            f"no burst: the {by} never used {burst_share:.0%} of a CPU for 25 ms after a pause"
        )
    pids = sorted(names)
    rows = []
    for k in range(round(window / STEP_SECONDS)):
        start = begin + k * STEP_SECONDS
        rows.append([round(used(pid, start, start + STEP_SECONDS), 1) for pid in pids])
    totals = {pid: round(used(pid, begin, begin + window), 1) for pid in pids}
    return {
        "window_seconds": window,
        "processes": [
            {"pid": pid, "role": _role(names[pid]), "cpu_ms": totals[pid]} for pid in pids
        ],
        "all_cpu_ms": round(sum(totals.values()), 1),
        "steps_ms": rows,
    }


def _print(report: dict[str, object]) -> None:
    processes = report["processes"]
    assert isinstance(processes, list)
    print(f"CPU ms over {report['window_seconds']} s from the burst's first 25 ms step:")
    for process in processes:
        print(f"  {process['role']:>12} {process['pid']:>7}: {process['cpu_ms']:7.1f}")
    print(f"  {'all':>12} {'':>7}: {report['all_cpu_ms']:7.1f}")
    print("  ms   " + " ".join(f"{p['role'][:11]:>11}" for p in processes))
    steps = report["steps_ms"]
    assert isinstance(steps, list)
    for k, row in enumerate(steps):
        print(f"{k * STEP_SECONDS * 1000:5.0f}  " + " ".join(f"{cpu:11.1f}" for cpu in row))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to sample")
    parser.add_argument("--window", type=float, default=0.5, help="seconds of burst reported")
    parser.add_argument("--json", type=Path, help="write the report here as well")
    parser.add_argument(
        "--by",
        choices=sorted(LEADS),
        default="core",
        help="whose first busy step after a pause marks the burst (gateway: for a core"
        " with provider workers)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 < args.window <= 10:
        parser.error("--seconds must be in (0, 600] and --window in (0, 10]")
    names, samples = sample(args.seconds)
    report = burst(names, samples, args.window, args.by)
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
