"""`scriptgen keys` as operators run it — a real CLI process on the core's data dir — and what a
running core and gateway then do with the keys and limits it wrote."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway import GatewayServer
from server import Core
from tests.gateway.conftest import gateway_config
from tests.security.cli import scriptgen
from tests.security.conftest import secure_config

KEY = re.compile(r"sg_k([0-9a-f]{12})_([0-9a-f]{48})")


@dataclass
class Deployment:
    data_dir: Path
    http: httpx.AsyncClient

    async def keys(self, *argv: str) -> str:
        """`scriptgen keys ARGV --data-dir …`; its stdout (exit status 0 asserted)."""
        finished = await scriptgen("keys", *argv, "--data-dir", str(self.data_dir))
        assert finished.status == 0, finished
        return finished.stdout

    async def create_key(self, tenant: str) -> str:
        out = await self.keys("create", "--tenant", tenant, "--description", "CI")
        key = out.rstrip("\n").splitlines()[-1]
        assert KEY.fullmatch(key), out  # alone on the last line
        return key


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A core with keys on and a gateway in front, on the data dir the CLI writes to."""
    data_dir = tmp_path / "data"
    # An operator may create keys before any core ran on the data dir.
    made = await scriptgen("keys", "create", "--tenant", "warmup", "--data-dir", str(data_dir))
    assert made.status == 0, made
    core = Core(secure_config(data_dir))
    await core.start()
    gateway = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}"))
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=30.0
        ) as http:
            yield Deployment(data_dir, http)
    finally:
        await gateway.stop()
        await core.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_create_prints_the_key_last_and_list_never_shows_it(
    deployment: Deployment,
) -> None:
    data_dir = str(deployment.data_dir)
    finished = await scriptgen(
        "keys", "create", "--tenant", "acme", "--scopes", "read", "--data-dir", data_dir
    )
    assert finished.status == 0, finished
    lines = finished.stdout.rstrip("\n").splitlines()
    found = KEY.fullmatch(lines[-1])
    assert found is not None, finished.stdout
    key, key_id, secret = lines[-1], f"k{found.group(1)}", found.group(2)
    assert sum(key in line for line in lines) == 1

    table = await deployment.keys("list", "--tenant", "acme")
    as_json = [json.loads(line) for line in (await deployment.keys("list", "--json")).splitlines()]
    for shown in (table, json.dumps(as_json)):
        assert key_id in shown and "acme" in shown
        assert secret not in shown and key not in shown
    (mine,) = [entry for entry in as_json if entry["id"] == key_id]
    assert (mine["tenant"], mine["scopes"], mine["revoked"]) == ("acme", ["read"], False)
    assert "warmup" not in table  # --tenant filters

    assert (await deployment.http.get("/v1/projects", headers=_bearer(key))).status_code == 200
    refused = await deployment.http.post("/v1/projects", json={"title": "T"}, headers=_bearer(key))
    assert refused.status_code == 403  # a read key cannot write


async def test_revoke_makes_the_gateway_answer_401(deployment: Deployment) -> None:
    key = await deployment.create_key("acme")
    key_id = key.split("_")[1]
    assert (await deployment.http.get("/v1/projects", headers=_bearer(key))).status_code == 200

    assert f"revoked {key_id}" in await deployment.keys("revoke", key_id)
    async with asyncio.timeout(10):  # within the core's key cache (0.2 s here)
        while True:
            answer = await deployment.http.get("/v1/projects", headers=_bearer(key))
            if answer.status_code != 200:
                break
            await asyncio.sleep(0.1)
    assert answer.status_code == 401
    assert answer.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    listed = json.loads((await deployment.keys("list", "--tenant", "acme", "--json")).strip())
    assert (listed["id"], listed["revoked"]) == (key_id, True)

    unknown = await scriptgen(
        "keys", "revoke", "k000000000000", "--data-dir", str(deployment.data_dir)
    )
    assert unknown.status == 1 and "no key" in unknown.stderr


async def test_limits_set_by_the_cli_are_applied_by_the_running_core(
    deployment: Deployment,
) -> None:
    before = await deployment.create_key("acme")
    answers = [await deployment.http.get("/v1/projects", headers=_bearer(before)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]  # the core's roomy defaults

    shown = await deployment.keys("limits", "acme", "--requests", "2", "--window-seconds", "60")
    assert "acme: requests 2 per 60 s" in shown
    assert "requests 2 per 60 s" in await deployment.keys("limits", "acme")

    key = await deployment.create_key("acme")  # a new bucket, under the tenant's new limit
    answers = [await deployment.http.get("/v1/projects", headers=_bearer(key)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].headers["X-RateLimit-Limit"] == "2"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert answers[-1].json()["error"]["details"][0]["reason"] == "RATE_LIMITED"

    other = await deployment.create_key("other")  # another tenant keeps the defaults
    answers = [await deployment.http.get("/v1/projects", headers=_bearer(other)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
