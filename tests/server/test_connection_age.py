"""--max-connection-age-seconds: clients are asked to reconnect, open streams carry on.

What a balancing client (the gateway's round_robin over a headless Service) needs
to find cores started after it connected: the core closes old connections with
an HTTP/2 GOAWAY. Proven here through a TCP proxy that counts connections: a
stream that outlives the age ends whole, unary calls keep working, and the
client has opened new connections meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from scriptgen.v1 import project_service_pb2

from server import Core, SyntheticConfig
from tests.clients.tcp_proxy import TcpProxy
from tests.conftest import fast_core_config
from tests.server.rpc import connect, script_of


async def test_old_connections_are_replaced_without_cutting_their_streams(
    tmp_path: Path,
) -> None:
    config = replace(
        fast_core_config(tmp_path / "core"),
        max_connection_age_seconds=0.5,
        max_connection_age_grace_seconds=30.0,
        # About two seconds of writing: the stream outlives several connection ages.
        synthetic=SyntheticConfig(first_token_seconds=0.0, tokens_per_second=150.0),
    )
    core = Core(config)
    await core.start()
    proxy = TcpProxy("127.0.0.1", core.grpc_port)
    await proxy.start()
    try:
        async with connect(proxy.target) as rpc:
            project = await rpc.create_project()
            writing = asyncio.create_task(rpc.generate(project.name))
            answered = 0
            while not writing.done():
                await rpc.projects.GetProject(
                    project_service_pb2.GetProjectRequest(name=project.name)
                )
                answered += 1
                await asyncio.sleep(0.1)
            events = await writing
            saved = await rpc.projects.GetEpisode(
                project_service_pb2.GetEpisodeRequest(name=events[-1].completed.episode.name)
            )
    finally:
        await proxy.stop()
        await core.stop()
    assert events[-1].WhichOneof("kind") == "completed"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert script_of(events) == saved.episode.script
    assert answered >= 10
    assert proxy.connections >= 3, "the core never asked the client to reconnect"
