"""The ghz configs: each calls a real RPC through server reflection (no proto files), with
a request body the RPC's message accepts, and the README points at them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from scriptgen.v1 import generation_service_pb2, project_service_pb2

from tests.deploy.tools import DEPLOY, ROOT

CONFIGS = sorted((DEPLOY / "ghz").glob("*.json"))
_TEMPLATE = re.compile(r"\{\{[^}]*\}\}")
#: Importing these registers their services in the default descriptor pool.
_SERVICES = (project_service_pb2, generation_service_pb2)


def _config(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_calls_a_real_rpc_with_a_valid_request(path: Path) -> None:
    config = _config(path)
    assert not {"proto", "protoset"} & config.keys(), "use server reflection"
    assert config["insecure"] is True and config["host"].endswith(":50051")
    assert config["total"] >= config["concurrency"] >= 1
    service_name, _, method_name = config["call"].rpartition(".")
    pool = descriptor_pool.Default()
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_type = message_factory.GetMessageClass(method.input_type)
    # ghz fills {{...}} templates per call; any text stands in for them here.
    body = json.loads(_TEMPLATE.sub("1", json.dumps(config["data"])))
    json_format.ParseDict(body, request_type())  # raises on unknown fields or bad values


def test_the_main_rpcs_have_configs() -> None:
    calls = {_config(path)["call"] for path in CONFIGS}
    assert {
        "scriptgen.v1.ProjectService.CreateProject",
        "scriptgen.v1.ProjectService.GetProject",
        "scriptgen.v1.ProjectService.ListProjects",
        "scriptgen.v1.GenerationService.GenerateScript",
    } <= calls


def test_readme_references_the_ghz_configs() -> None:
    assert "deploy/ghz/" in (ROOT / "README.md").read_text()
