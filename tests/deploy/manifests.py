"""Built Kubernetes manifests, read as plain objects, and the lookups the tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, kustomize, run

K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
}

Manifest = dict[str, Any]


def build(folder: Path) -> list[Manifest]:
    """`kustomize build folder`, as objects; a failed build fails the test with its error."""
    result = run([*kustomize(), str(folder)])
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of `kind` named `name`."""
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    """The pod spec of a Deployment, Rollout (with a template) or CronJob."""
    if workload["kind"] == "CronJob":
        spec: dict[str, Any] = workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    template: dict[str, Any] = workload["spec"]["template"]["spec"]
    return template


def workloads(manifests: list[Manifest]) -> Iterator[Manifest]:
    """Every object that runs pods from its own template."""
    for manifest in manifests:
        if manifest["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"}:
            yield manifest


def env(container: dict[str, Any]) -> dict[str, Any]:
    """A container's env entries by name (the value, or the valueFrom mapping)."""
    return {
        item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])
    }


def container(workload: Manifest, name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return dict(found)
