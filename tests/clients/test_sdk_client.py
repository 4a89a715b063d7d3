"""Client: every RPC against a real core, pagination, deadlines, retries on UNAVAILABLE,
idempotent project creation, following ended jobs, calls after close."""

from __future__ import annotations

import asyncio
import inspect
import time
from datetime import timedelta

import grpc
import pytest
import scriptgen
from scriptgen import (
    Client,
    ClientClosedError,
    ClientConfig,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
)
from scriptgen.v1 import generation_pb2, project_pb2

from server import Core
from tests.clients.conftest import TEST_RETRY
from tests.clients.tcp_proxy import TcpProxy


async def test_projects_create_get_update_list_delete(client: Client) -> None:
    created = await client.create_project(
        project_pb2.Project(title="Draft", logline="old"),
        title="Night Ferry",
        type=project_pb2.PROJECT_TYPE_DRAMA,
        description="A ferry that never reaches the other side.",
        language="ko",
        project_id="night-ferry",
    )
    assert created.name == "projects/night-ferry"
    assert created.title == "Night Ferry"  # keywords win over the message
    assert created.logline == "old"
    assert created.language == "ko"
    assert created.create_time.seconds > 0

    fetched = await client.get_project(created.name)
    assert fetched == created

    change = project_pb2.Project(name=created.name, title="Night Ferry II", logline="ignored")
    updated = await client.update_project(change, ["title"])
    assert updated.title == "Night Ferry II"
    assert updated.logline == "old", "fields outside the mask are kept"
    assert (await client.get_project(created.name)).title == "Night Ferry II"

    page = await client.list_projects()
    assert [project.name for project in page.projects] == [created.name]
    assert page.next_page_token == ""

    await client.delete_project(created.name)
    with pytest.raises(NotFoundError):
        await client.get_project(created.name)


async def test_iter_projects_walks_every_page(client: Client) -> None:
    names = {(await client.create_project(title=f"Season {n}")).name for n in range(5)}
    first = await client.list_projects(page_size=2)
    assert len(first.projects) == 2
    assert first.next_page_token
    walked = [project.name async for project in client.iter_projects(page_size=2)]
    assert len(walked) == 5
    assert set(walked) == names


async def test_list_projects_rejects_a_page_size_out_of_range(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.list_projects(page_size=5000)
    assert [violation.field for violation in raised.value.field_violations] == ["page_size"]


async def test_episodes_and_generations_of_a_written_episode(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot", "The keeper meets the stranger.") as stream:
        result = await stream.collect()
    assert result.outcome == "completed"
    assert result.episode is not None
    assert result.error is None
    assert stream.name == result.generation
    assert stream.last_sequence == result.terminal_event.sequence

    episodes = [episode async for episode in client.iter_episodes(project.name)]
    assert [episode.name for episode in episodes] == [result.episode.name]
    page = await client.list_episodes(project.name, page_size=10)
    assert page.episodes[0].number == 1
    assert page.episodes[0].script == "", "lists leave the script out"

    episode = await client.get_episode(result.episode.name)
    assert episode.script == result.script
    assert episode.generation == result.generation
    assert episode.title == "Pilot"

    job = await client.get_generation(result.generation)
    assert job.state == generation_pb2.GENERATION_STATE_SUCCEEDED
    assert job.episode == episode.name
    assert job.request_id == stream.request_id
    assert len(stream.request_id) == 32, "a uuid4 idempotency key was chosen"

    listed = await client.list_generations(project.name)
    assert [generation.name for generation in listed.generations] == [job.name]
    everything = [generation.name async for generation in client.iter_generations()]
    assert job.name in everything

    again = await client.cancel_generation(job.name)
    assert again.state == generation_pb2.GENERATION_STATE_SUCCEEDED, "an ended job is unchanged"

    with pytest.raises(FailedPreconditionError):
        await client.delete_project(project.name)
    await client.delete_episode(episode.name)
    with pytest.raises(NotFoundError):
        await client.get_episode(episode.name)
    await client.delete_project(project.name)


async def test_delete_project_with_force_deletes_its_episodes(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        result = await stream.collect()
    assert result.episode is not None
    await client.delete_project(project.name, force=True)
    with pytest.raises(NotFoundError):
        await client.get_episode(result.episode.name)


async def test_cancel_generation_ends_a_running_job_with_a_cancelled_event(
    slow_client: Client,
) -> None:
    project = await slow_client.create_project(title="Slow Burn")
    async with slow_client.generate(project.name, "Pilot") as stream:
        first = await anext(stream)
        job = await slow_client.cancel_generation(first.generation)
        assert job.name == first.generation
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
    assert rest[-1].WhichOneof("kind") == "cancelled"
    assert [event.sequence for event in [first, *rest]] == list(range(1, len(rest) + 2))
    ended = await slow_client.get_generation(first.generation)
    assert ended.state == generation_pb2.GENERATION_STATE_CANCELLED


async def test_generate_with_the_same_request_id_returns_the_same_job(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot", request_id="same-key") as first:
        one = await first.collect()
    async with client.generate(project.name, "Pilot", request_id="same-key") as second:
        two = await second.collect()
    assert one.generation == two.generation
    assert one.script == two.script
    listed = await client.list_generations(project.name)
    assert len(listed.generations) == 1


async def test_follow_replays_a_finished_job_from_any_sequence(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        events = [event async for event in stream]
    async with client.follow(events[0].generation) as replay:
        assert [event async for event in replay] == events
    async with client.follow(events[0].generation, after_sequence=5) as tail:
        assert [event async for event in tail] == events[5:]


async def test_follow_past_the_last_event_is_out_of_range(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        last = [event async for event in stream][-1]
    with pytest.raises(InvalidArgumentError) as raised:
        async with client.follow(last.generation, after_sequence=last.sequence + 10) as ahead:
            await anext(ahead)
    assert raised.value.code is grpc.StatusCode.OUT_OF_RANGE
    assert raised.value.reason == "SEQUENCE_AHEAD"


async def test_a_tiny_deadline_on_a_stream_is_deadline_exceeded(slow_client: Client) -> None:
    project = await slow_client.create_project(title="Short Fuse")
    started = time.monotonic()
    stream = slow_client.generate(project.name, "Pilot", deadline=0.3)
    with pytest.raises(DeadlineExceededError) as raised:
        await stream.collect()
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    assert stream.finished


async def test_a_unary_call_stuck_past_its_deadline_is_deadline_exceeded(core: Core) -> None:
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    try:
        async with Client(proxy.target) as client:
            await client.list_projects()  # the link is up
            proxy.stall()  # answers are held back: a core that hangs
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError) as raised:
                await client.list_projects(deadline=0.3)
            elapsed = time.monotonic() - started
    finally:
        await proxy.stop()
    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 3


async def test_unavailable_is_retried_until_the_core_is_reachable(core: Core) -> None:
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    port = proxy.port
    await proxy.stop()  # nothing listens on `port` for now
    retry = RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.1)
    config = ClientConfig(retry=retry, max_reconnect_backoff=0.2)
    async with Client(f"127.0.0.1:{port}", config) as client:
        call = asyncio.create_task(client.list_projects())
        await asyncio.sleep(0.5)
        assert not call.done()
        await proxy.start(port)
        try:
            async with asyncio.timeout(10):
                page = await call
        finally:
            await proxy.stop()
    assert list(page.projects) == []
    assert proxy.connections >= 1


async def test_unavailable_gives_up_after_the_retry_policy(unused_tcp_port: int) -> None:
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.05)
    started = time.monotonic()
    async with Client(f"127.0.0.1:{unused_tcp_port}", ClientConfig(retry=retry)) as client:
        with pytest.raises(UnavailableError):
            await client.get_project("projects/x")
    assert time.monotonic() - started < 5


async def test_calls_with_side_effects_are_not_retried(unused_tcp_port: int) -> None:
    retry = RetryPolicy(max_attempts=50, initial_backoff=0.2, max_backoff=0.2)
    async with Client(f"127.0.0.1:{unused_tcp_port}", ClientConfig(retry=retry)) as client:
        for call in (
            client.update_project(project_pb2.Project(name="projects/x", title="T"), ["title"]),
            client.delete_project("projects/x"),
            client.create_project(title="Without a key", request_id=""),
        ):
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                await call
            assert time.monotonic() - started < 0.2 * 2


async def test_create_project_is_retried_under_its_request_id_and_creates_one_project(
    core: Core, client: Client
) -> None:
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    config = ClientConfig(retry=TEST_RETRY, max_reconnect_backoff=0.3)
    try:
        async with Client(proxy.target, config) as proxied:
            await proxied.list_projects()  # the link is up
            proxy.stall()  # the request goes through; its answer is held back
            creating = asyncio.create_task(proxied.create_project(title="Only Once"))
            async with asyncio.timeout(10):
                while not (await client.list_projects()).projects:  # noqa: ASYNC110 (polls the core)
                    await asyncio.sleep(0.05)
            assert not creating.done()
            await proxy.sever()  # the answer is lost: UNAVAILABLE, and the call is tried again
            proxy.flow()
            async with asyncio.timeout(10):
                created = await creating
    finally:
        await proxy.stop()
    assert proxy.connections >= 2
    page = await client.list_projects()
    assert [project.name for project in page.projects] == [created.name]
    assert created.title == "Only Once"


async def test_follow_from_an_ended_jobs_last_sequence_ends_at_once(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        await stream.collect()
    job = await client.get_generation(stream.name)
    assert job.last_sequence == stream.last_sequence
    started = time.monotonic()
    async with client.follow(job.name, after_sequence=job.last_sequence) as tail:
        assert [event async for event in tail] == []
    assert tail.finished
    assert tail.resumes == 0
    assert time.monotonic() - started < 2


async def test_collect_of_a_follow_after_sequence_0_holds_the_rest_of_the_script(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(project.name, "Pilot") as stream:
        events = [event async for event in stream]
    deltas = [event for event in events if event.WhichOneof("kind") == "text_delta"]
    assert len(deltas) >= 2
    after = deltas[0].sequence  # the rest starts with a delta at an offset past 0
    async with client.follow(stream.name, after_sequence=after) as tail:
        result = await tail.collect()
    rest = "".join(delta.text_delta.text for delta in deltas[1:])
    assert deltas[1].text_delta.offset > 0
    assert result.outcome == "completed"
    assert result.script == rest
    assert result.episode is not None
    assert result.episode.script.endswith(rest)
    assert result.event_count == len(events) - after


async def test_calls_after_close_raise_client_closed_error(core_target: str) -> None:
    client = Client(core_target)
    await client.list_projects()
    await client.close()
    with pytest.raises(ClientClosedError):
        await client.get_project("projects/x")
    with pytest.raises(ClientClosedError):
        await client.generate("projects/x", "Pilot").collect()
    with pytest.raises(ClientClosedError):
        await anext(client.follow("generations/x"))


async def test_closing_the_client_during_a_unary_call_raises_client_closed_error(
    core: Core,
) -> None:
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    try:
        client = Client(proxy.target)
        await client.list_projects()
        proxy.stall()  # the next answer never comes
        listing = asyncio.create_task(client.list_projects())
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(ClientClosedError):
            async with asyncio.timeout(5):
                await listing
    finally:
        await proxy.stop()


async def test_closing_the_client_under_a_reading_stream_raises_client_closed_error(
    slow_target: str,
) -> None:
    client = Client(slow_target, ClientConfig(retry=TEST_RETRY))
    project = await client.create_project(title="Cut Short")
    stream = client.generate(project.name, "Pilot")
    await anext(stream)

    async def read_on() -> None:
        async for _ in stream:
            pass

    reader = asyncio.create_task(read_on())
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ClientClosedError):
        async with asyncio.timeout(5):
            await reader
    assert stream.finished


async def test_metadata_from_the_config_is_sent(core_target: str) -> None:
    config = ClientConfig(metadata=(("x-scriptgen-test", "yes"),))
    async with Client(core_target, config) as client:
        assert list((await client.list_projects()).projects) == []
    assert client.config.metadata == (("x-scriptgen-test", "yes"),)
    assert client.target == core_target


def test_retry_backoff_grows_within_bounds_and_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.2)
    for failures, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0)]:
        delays = {policy.backoff(failures) for _ in range(20)}
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
    assert RetryPolicy(jitter=0).backoff(1) == RetryPolicy().initial_backoff


def test_retry_delay_is_the_longer_of_backoff_and_retry_info_within_max_retry_delay() -> None:
    policy = RetryPolicy(initial_backoff=0.1, jitter=0, max_retry_delay=2.0)
    assert policy.retry_delay(1) == 0.1
    assert policy.retry_delay(1, timedelta(seconds=1.5)) == 1.5
    assert policy.retry_delay(1, timedelta(milliseconds=10)) == 0.1
    assert policy.retry_delay(1, timedelta(seconds=2.5)) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff": -1},
        {"multiplier": 0.5},
        {"jitter": 2},
        {"max_retry_delay": -1},
    ],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"deadline": 0}, {"stream_idle_timeout": -1}, {"max_message_bytes": 0}]
)
def test_client_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


def test_root_certificates_need_tls() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        ClientConfig(root_certificates=b"-----BEGIN CERTIFICATE-----")


def test_client_config_channel_options_carry_the_message_size() -> None:
    options = dict(ClientConfig(max_message_bytes=1234).channel_options())
    assert options["grpc.max_receive_message_length"] == 1234
    assert options["grpc.max_send_message_length"] == 1234


def test_the_package_exports_its_public_api_and_nothing_private() -> None:
    exported = set(scriptgen.__all__)
    for name in exported:
        member = getattr(scriptgen, name)
        if isinstance(member, type) or inspect.isfunction(member):
            assert member.__module__.startswith("scriptgen."), name
    # Subpackages (v1, cli, loadtest) appear as attributes once imported; they are not API names.
    public = {
        name
        for name in dir(scriptgen)
        if not name.startswith("_") and not inspect.ismodule(getattr(scriptgen, name))
    }
    assert public <= exported, "everything public is in __all__"
    assert {"Client", "ClientConfig", "RPCError", "GenerationStream"} <= exported


def test_the_sdk_does_not_import_the_server_or_the_gateway() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, scriptgen, scriptgen.cli;"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('server', 'gateway')];"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    finished = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr


async def test_generate_sends_provider_routing_as_metadata(
    client: Client, project: project_pb2.Project
) -> None:
    async with client.generate(
        project.name, "Pilot", preferred_provider="synthetic", feature_flags=["no-fallback"]
    ) as stream:
        result = await stream.collect()
    assert result.outcome == "completed"
    with pytest.raises(InvalidArgumentError) as raised:
        await client.generate(project.name, "Pilot", preferred_provider="quill-9000").collect()
    assert [v.field for v in raised.value.field_violations] == ["x-preferred-provider"]
    with pytest.raises(InvalidArgumentError) as raised:
        await client.generate(project.name, "Pilot", disabled_providers=["nope"]).collect()
    assert [v.field for v in raised.value.field_violations] == ["x-disabled-providers"]
