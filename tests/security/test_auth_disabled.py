"""`--auth disabled` is for loopback only: the core and `serve` refuse other addresses (exit 2),
warn on loopback, and a gateway beyond loopback refuses to expose a core that needs no key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from scriptgen.v1 import project_service_pb2

from gateway import GatewayServer
from server import Core
from tests.gateway.conftest import gateway_config
from tests.security.cli import running, scriptgen
from tests.server.rpc import connect


@pytest.mark.parametrize(
    "argv",
    [
        ("server", "--grpc-address", "0.0.0.0:0"),
        ("serve", "--grpc-address", "0.0.0.0:0", "--http-address", "127.0.0.1:0"),
        ("serve", "--grpc-address", "127.0.0.1:0", "--http-address", "0.0.0.0:0"),
    ],
    ids=["server", "serve-grpc", "serve-http"],
)
async def test_auth_off_beyond_loopback_exits_2_with_a_clear_message(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    finished = await scriptgen(
        *argv, "--auth", "disabled", "--metrics-address", "off", "--data-dir", str(tmp_path)
    )
    assert finished.status == 2, finished
    assert "SCRIPTGEN_AUTH=disabled only works on loopback addresses" in finished.stderr
    assert "0.0.0.0:0" in finished.stderr and "Traceback" not in finished.stderr
    assert "scriptgen is running" not in finished.stdout
    assert not (tmp_path / "scriptgen.sqlite3").exists(), "nothing was started"


async def test_auth_off_on_loopback_runs_and_logs_a_warning(tmp_path: Path) -> None:
    async with running(
        "server",
        "--auth",
        "disabled",
        "--grpc-address",
        "127.0.0.1:0",
        "--metrics-address",
        "off",
        "--data-dir",
        str(tmp_path),
    ) as server:
        warning = await server.read_line("stderr", r"API keys are DISABLED")
        await server.read_line("stdout", r"Press Ctrl-C")
    line = json.loads(warning.string)
    assert line["level"] == "WARNING"
    assert "loopback" in line["message"]


async def _answer(http: httpx.AsyncClient, path: str, reason: str) -> httpx.Response:
    """GET `path` until the error reason is `reason` (the guard asks the core first)."""
    async with asyncio.timeout(15):
        while True:
            answer = await http.get(path)
            details = answer.json().get("error", {}).get("details", [{}])
            if details and details[0].get("reason") == reason:
                return answer
            await asyncio.sleep(0.05)


async def test_a_gateway_beyond_loopback_refuses_a_core_without_keys(
    core: Core, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    gateway = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}", http_address="0.0.0.0:0"))
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=10
        ) as http:
            refused = await _answer(http, "/v1/projects", "CORE_AUTH_DISABLED")
            created = await http.post("/v1/projects", json={"title": "Exposed"})
            ready = await http.get("/readyz")
            page = await http.get("/healthz")
    finally:
        await gateway.stop()
    assert refused.status_code == 503
    assert "without an API key" in refused.json()["error"]["message"]
    assert created.status_code == 503
    assert ready.status_code == 503 and page.status_code == 200
    errors = [line for line in log_lines() if line["logger"] == "gateway.open_core"]
    assert [line["level"] for line in errors] == ["ERROR"]
    assert "SCRIPTGEN_AUTH=disabled" in errors[0]["message"]
    # Nothing was created through the refused gateway.
    async with connect(f"127.0.0.1:{core.grpc_port}") as rpc:
        listed = await rpc.projects.ListProjects(project_service_pb2.ListProjectsRequest())
    assert list(listed.projects) == []


async def test_a_gateway_beyond_loopback_serves_a_core_that_requires_keys(
    secure_target: str, alice_key: str
) -> None:
    gateway = GatewayServer(gateway_config(secure_target, http_address="0.0.0.0:0"))
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=10
        ) as http:
            async with asyncio.timeout(15):
                while True:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
            keyless = await http.get("/v1/projects")
            keyed = await http.get("/v1/projects", headers={"Authorization": f"Bearer {alice_key}"})
    finally:
        await gateway.stop()
    assert keyless.status_code == 401
    assert keyed.status_code == 200


async def test_scriptgen_gateway_beyond_loopback_refuses_a_core_without_keys(
    core: Core, core_target: str
) -> None:
    async with running(
        "gateway", "--core-target", core_target, "--http-address", "0.0.0.0:0"
    ) as gateway:
        base = (await gateway.read_line("stdout", r"HTTP\s+(\S+)")).group(1)
        logged = await gateway.read_line("stderr", r"answers calls without an API key")
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            refused = await _answer(http, "/v1/projects", "CORE_AUTH_DISABLED")
    assert json.loads(logged.string)["level"] == "ERROR"
    assert refused.status_code == 503
