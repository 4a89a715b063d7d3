"""Two real core processes on one PostgreSQL database share projects and episode numbers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from scriptgen.v1 import generation_service_pb2, project_pb2, project_service_pb2

from tests.backends.postgres import fresh_database
from tests.server.rpc import Stubs, connect

# A core in its own process: prints its gRPC port, serves until stdin closes.
_RUNNER = """
import asyncio, sys
from pathlib import Path
from server import Core, CoreConfig, SyntheticConfig
from server.auth import AuthConfig

async def main() -> None:
    core = Core(CoreConfig(
        auth=AuthConfig(enabled=False),
        data_dir=Path(sys.argv[1]),
        grpc_address="127.0.0.1:0",
        metrics_address=None,
        database_url=sys.argv[2],
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0),
        shutdown_grace_seconds=2.0,
    ))
    await core.start()
    print(core.grpc_port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await core.stop()

asyncio.run(main())
"""
_START_SECONDS = 30.0


@contextlib.asynccontextmanager
async def core_process(data_dir: Path, database_url: str) -> AsyncIterator[str]:
    """A core in a child process; its gRPC target. Stopped (stdin closed) afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RUNNER,
        str(data_dir),
        database_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        async with asyncio.timeout(_START_SECONDS):
            line = await process.stdout.readline()
        assert line.strip().isdigit(), f"the core did not start: {line!r}"
        yield f"127.0.0.1:{int(line)}"
    finally:
        process.stdin.close()
        try:
            async with asyncio.timeout(_START_SECONDS):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


async def _episode_number(rpc: Stubs, parent: str, title: str) -> int:
    request = generation_service_pb2.GenerateScriptRequest(parent=parent, title=title)
    events = [reply.event async for reply in rpc.generations.GenerateScript(request)]
    assert events[-1].HasField("completed"), events[-1]
    return events[-1].completed.episode.number


async def test_concurrent_generations_on_two_cores_get_numbers_one_to_n(
    postgres_url: str, tmp_path: Path
) -> None:
    jobs = 24
    async with (
        fresh_database(postgres_url) as url,
        core_process(tmp_path / "a", url) as first_target,
        core_process(tmp_path / "b", url) as second_target,
        connect(first_target) as first,
        connect(second_target) as second,
    ):
        project = project_pb2.Project(title="Two Cores")
        created = await asyncio.gather(
            first.projects.CreateProject(
                project_service_pb2.CreateProjectRequest(project=project, request_id="one")
            ),
            second.projects.CreateProject(
                project_service_pb2.CreateProjectRequest(project=project, request_id="one")
            ),
        )
        assert created[0].project.name == created[1].project.name
        parent = created[0].project.name
        numbers = await asyncio.gather(
            *(
                _episode_number(first if index % 2 else second, parent, f"Episode {index}")
                for index in range(jobs)
            )
        )
        assert sorted(numbers) == list(range(1, jobs + 1))
        listing = await first.projects.ListEpisodes(
            project_service_pb2.ListEpisodesRequest(parent=parent, page_size=100)
        )
        assert [episode.number for episode in listing.episodes] == list(range(1, jobs + 1))
        again = await second.projects.GetProject(project_service_pb2.GetProjectRequest(name=parent))
        assert again.project.episode_count == jobs
