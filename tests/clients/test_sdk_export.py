"""Exporting an episode as a file, through the SDK and `scriptgen episodes export`."""

from __future__ import annotations

from pathlib import Path

import pytest
from scriptgen import Client
from scriptgen.cli import run
from scriptgen.v1 import project_pb2, project_service_pb2


@pytest.fixture
async def episode(client: Client, project: project_pb2.Project) -> project_pb2.Episode:
    async with client.generate(project.name, "Pilot") as stream:
        result = await stream.collect()
    assert result.episode is not None
    return await client.get_episode(result.episode.name)


async def test_export_fountain_and_pdf(client: Client, episode: project_pb2.Episode) -> None:
    fountain = await client.export_episode(episode.name, project_service_pb2.EXPORT_FORMAT_FOUNTAIN)
    assert fountain.content_type.startswith("text/plain")
    assert fountain.filename.endswith(".fountain")
    first_heading = episode.script.strip().splitlines()[0]
    assert first_heading in fountain.content.decode("utf-8")

    pdf = await client.export_episode(episode.name, project_service_pb2.EXPORT_FORMAT_PDF)
    assert pdf.content_type == "application/pdf"
    assert pdf.content.startswith(b"%PDF")


async def test_cli_export_writes_the_file(
    core_target: str, episode: project_pb2.Episode, tmp_path: Path
) -> None:
    target = tmp_path / "pilot.fdx"
    argv = ["episodes", "export", episode.name, "--format", "fdx", "-o", str(target)]
    status = await run([*argv, "--target", core_target])
    assert status == 0
    assert target.read_bytes().lstrip().startswith(b"<?xml")
