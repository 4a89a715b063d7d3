"""A live core + gateway with API keys on, in a thread of its own, for the sync fuzzers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from grpc import aio
from scriptgen.v1 import (
    generation_service_pb2,
    generation_service_pb2_grpc,
    knowledge_pb2,
    project_pb2,
    project_service_pb2,
    project_service_pb2_grpc,
)

from gateway import GatewayServer
from server import Core
from tests.gateway.conftest import gateway_config
from tests.security.conftest import make_key, secure_config


@dataclass
class Live:
    """Where the servers listen, a key of tenant `fuzz`, and names of real resources."""

    http: str = ""
    grpc: str = ""
    key: str = ""
    #: A project with one episode and one knowledge document, and a finished job.
    names: tuple[str, ...] = ()
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    failures: list[BaseException] = field(default_factory=list)


async def _seed(target: str, key: str) -> tuple[str, ...]:
    """Resources for fuzzed names to hit: projects/p1, its episode 1 and document d1, a job."""
    metadata = (("authorization", f"Bearer {key}"),)
    async with aio.insecure_channel(target) as channel:
        projects = project_service_pb2_grpc.ProjectServiceStub(channel)
        generations = generation_service_pb2_grpc.GenerationServiceStub(channel)
        await projects.CreateProject(
            project_service_pb2.CreateProjectRequest(
                project=project_pb2.Project(title="Fuzzed"), project_id="p1"
            ),
            metadata=metadata,
        )
        await projects.AddKnowledgeDocument(
            project_service_pb2.AddKnowledgeDocumentRequest(
                parent="projects/p1",
                document_id="d1",
                document=knowledge_pb2.KnowledgeDocument(
                    kind=knowledge_pb2.KNOWLEDGE_KIND_CHARACTER_PROFILE,
                    title="Mina",
                    text="A nurse.",
                ),
            ),
            metadata=metadata,
        )
        job = ""
        async for response in generations.GenerateScript(
            generation_service_pb2.GenerateScriptRequest(parent="projects/p1", title="Pilot"),
            metadata=metadata,
        ):
            job = response.event.generation
    return ("projects/p1", "projects/p1/episodes/1", "projects/p1/knowledge/d1", job)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    state = Live()

    async def serve() -> None:
        core = Core(secure_config(folder / "core"))
        await core.start()
        gateway = GatewayServer(gateway_config(f"127.0.0.1:{core.grpc_port}"))
        await gateway.start()
        try:
            state.key = await make_key(core, "fuzz", ("read", "write", "admin"))
            state.names = await _seed(f"127.0.0.1:{core.grpc_port}", state.key)
            state.http = f"http://127.0.0.1:{gateway.port}"
            state.grpc = f"127.0.0.1:{core.grpc_port}"
            state.loop = asyncio.get_running_loop()
            state.stop = asyncio.Event()
            ready.set()
            await state.stop.wait()
        finally:
            await gateway.stop()
            await core.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # surfaced to the test
            state.failures.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="fuzz servers", daemon=True)
    thread.start()
    assert ready.wait(30), "the servers did not start"
    if state.failures:
        raise state.failures[0]
    yield state
    assert state.loop is not None and state.stop is not None
    state.loop.call_soon_threadsafe(state.stop.set)
    thread.join(30)
