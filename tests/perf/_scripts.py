"""Run one of scripts/ as its users do, in its own process, and keep what it printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[2] / "scripts"


def run_script(name: str, *arguments: str, timeout: float = 120) -> str:
    """What `scripts/<name>` printed; fails with its error output if it failed, and
    raises TimeoutExpired if it ran past `timeout` seconds."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def refusal(name: str, *arguments: str) -> str:
    """What `scripts/<name>` wrote to stderr on refusing `arguments` (argparse's exit 2)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stderr


def run_and_median(printed: str, label: str, unit: str, runs: int) -> list[int]:
    """The figures a script printed as `run N  <label>  <figure> <unit>` lines and its
    `median` line, checked: `runs` of them, a median, every one above zero."""
    figures = re.findall(rf"^run \d+\s+{label}\s+(\d+) {unit}$", printed, re.M)
    median = re.search(rf"^median\s+{label}\s+(\d+) {unit}$", printed, re.M)
    assert len(figures) == runs and median is not None, printed
    values = [int(value) for value in [*figures, median.group(1)]]
    assert all(value > 0 for value in values), printed
    return values
