"""Run one of scripts/ as its users do, in its own process, and keep what it printed."""

from __future__ import annotations

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
