"""API keys: format, hashing, storage on both backends, and what a core accepts."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest
from grpc import aio
from scriptgen.v1 import project_pb2, project_service_pb2, project_service_pb2_grpc

from server import Core
from server.auth import keys
from server.auth.records import TenantLimits
from tests.security.conftest import bearer, make_key
from tests.server.rpc import error_info, health_check
from tests.server.store.conftest import StoreFactory


def test_a_key_is_shown_once_and_only_its_hash_is_kept() -> None:
    plaintext, record = keys.new_key("alice", ["write", "read"])
    parsed = keys.parse(plaintext)
    assert parsed is not None and parsed[0] == record.key_id
    assert record.secret_sha256 == hashlib.sha256(parsed[1].encode()).hexdigest()
    assert parsed[1] not in repr(record)
    assert record.scopes == ("read", "write")
    assert keys.matches(record, parsed[1])
    assert not keys.matches(record, "0" * 48)
    for bad in ("", "sg_", plaintext + "x", plaintext.replace("sg_", "sk_"), "Bearer " + plaintext):
        assert keys.parse(bad) is None


@pytest.mark.parametrize("tenant", ["", "Alice", "a/b", "x" * 64])
def test_tenant_ids_are_checked(tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        keys.new_key(tenant, ["read"])


def test_unknown_scopes_are_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        keys.new_key("alice", ["root"])


async def test_keys_and_limits_round_trip_on_both_backends(make_store: StoreFactory) -> None:
    store = await make_store()
    other = await make_store()  # a second core on the same database
    _, record = keys.new_key("alice", ["read"], description="ci", create_time=5)
    await store.create_key(record)
    assert await other.get_key(record.key_id) == record
    assert await other.get_key("k000000000000") is None
    assert [k.key_id for k in await other.list_keys("alice")] == [record.key_id]
    assert await other.list_keys("bob") == []
    assert await store.revoke_key(record.key_id)
    assert await store.revoke_key(record.key_id)  # twice is fine
    assert not await store.revoke_key("k000000000000")
    revoked = await other.get_key(record.key_id)
    assert revoked is not None and revoked.revoked
    assert await store.get_tenant_limits("alice") == TenantLimits("alice")
    await store.set_tenant_limits(TenantLimits("alice", 5, 10, 2, 1000))
    assert await other.get_tenant_limits("alice") == TenantLimits("alice", 5, 10, 2, 1000)
    first = await store.shared_secret("job-token", "a" * 32)
    assert await other.shared_secret("job-token", "b" * 32) == first == "a" * 32


def _create(title: str = "Night Shift") -> project_service_pb2.CreateProjectRequest:
    return project_service_pb2.CreateProjectRequest(project=project_pb2.Project(title=title))


async def test_calls_without_a_valid_key_are_unauthenticated(
    secure_core: Core, channel: aio.Channel, alice_key: str
) -> None:
    stub = project_service_pb2_grpc.ProjectServiceStub(channel)
    wrong = alice_key[:-4] + "0000" if not alice_key.endswith("0000") else alice_key[:-4] + "1111"
    for metadata, reason in [
        ((), "API_KEY_MISSING"),
        ((("authorization", "Basic abc"),), "API_KEY_MISSING"),
        (bearer("nonsense"), "API_KEY_INVALID"),
        (bearer(wrong), "API_KEY_INVALID"),
        (bearer("sg_k000000000000_" + "0" * 48), "API_KEY_INVALID"),
    ]:
        with pytest.raises(aio.AioRpcError) as raised:
            await stub.CreateProject(_create(), metadata=metadata)
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error_info(raised.value).reason == reason
    created = await stub.CreateProject(_create(), metadata=bearer(alice_key))
    assert created.project.name.startswith("projects/")
    rejected = secure_core.metrics.registry.get_sample_value(
        "scriptgen_auth_rejections_total", {"reason": "API_KEY_INVALID"}
    )
    assert rejected == 3


async def test_scopes_decide_what_a_key_may_do(secure_core: Core, channel: aio.Channel) -> None:
    stub = project_service_pb2_grpc.ProjectServiceStub(channel)
    reader = await make_key(secure_core, "alice", ("read",))
    writer = await make_key(secure_core, "alice", ("write",))
    created = await stub.CreateProject(_create(), metadata=bearer(writer))
    found = await stub.GetProject(
        project_service_pb2.GetProjectRequest(name=created.project.name), metadata=bearer(reader)
    )
    assert found.project.title == "Night Shift"
    with pytest.raises(aio.AioRpcError) as raised:
        await stub.CreateProject(_create(), metadata=bearer(reader))
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "INSUFFICIENT_SCOPE"


async def test_a_revoked_key_stops_working_within_the_cache_time(
    secure_core: Core, channel: aio.Channel, alice_key: str
) -> None:
    stub = project_service_pb2_grpc.ProjectServiceStub(channel)
    listing = project_service_pb2.ListProjectsRequest()
    await stub.ListProjects(listing, metadata=bearer(alice_key))
    parsed = keys.parse(alice_key)
    assert parsed is not None
    assert await secure_core.store.revoke_key(parsed[0])
    await asyncio.sleep(secure_core.config.auth.key_cache_seconds + 0.1)
    with pytest.raises(aio.AioRpcError) as raised:
        await stub.ListProjects(listing, metadata=bearer(alice_key))
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_need_no_key(channel: aio.Channel) -> None:
    from grpc_health.v1 import health_pb2

    reply = await health_check(channel)(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
