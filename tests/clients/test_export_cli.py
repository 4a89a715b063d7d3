"""`scriptgen episodes export NAME --format … --output FILE`: every format, opened after writing."""

from __future__ import annotations

import asyncio
import io
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pypdf
import pytest
from scriptgen import Client
from scriptgen.cli import run
from scriptgen.v1 import project_pb2


@pytest.fixture
async def korean_episode(client: Client) -> project_pb2.Episode:
    project = await client.create_project(title="밤 근무", language="ko")
    async with client.generate(project.name, "첫 번째 밤") as stream:
        result = await stream.collect()
    assert result.episode is not None
    return await client.get_episode(result.episode.name)


async def _export(target: str, *argv: str) -> int:
    return await asyncio.wait_for(run([*argv, "--target", target]), timeout=60)


async def test_every_format_is_written_and_opens(
    core_target: str, korean_episode: project_pb2.Episode, tmp_path: Path
) -> None:
    lines = [line.removeprefix("@") for line in korean_episode.script.splitlines()]
    korean = [line for line in lines if line and not line.isascii()]
    written = {}
    for fmt in ("fountain", "fdx", "html", "pdf"):
        path = tmp_path / f"episode.{fmt}"
        argv = ["episodes", "export", korean_episode.name, "--format", fmt, "--output", str(path)]
        assert await _export(core_target, *argv) == 0
        written[fmt] = path.read_bytes()
    assert written["fountain"].decode("utf-8").endswith(korean_episode.script)
    fdx = "".join(ET.fromstring(written["fdx"]).itertext())
    page = written["html"].decode("utf-8")
    reader = pypdf.PdfReader(io.BytesIO(written["pdf"]))
    assert len(reader.pages) >= 2
    pdf = "\n".join(p.extract_text() for p in reader.pages)
    for line in korean:
        assert line in fdx and line in page and line in pdf, line


async def test_without_output_the_core_names_the_file(
    core_target: str,
    korean_episode: project_pb2.Episode,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = tmp_path / "exports"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    assert (
        await _export(core_target, "episodes", "export", korean_episode.name, "--format", "pdf")
        == 0
    )
    project_id = korean_episode.name.split("/")[1]
    expected = workdir / f"{project_id}-e01.pdf"
    assert expected.read_bytes().startswith(b"%PDF")
    assert f"wrote {expected.name}" in capsys.readouterr().out
    assert os.listdir(workdir) == [expected.name]


async def test_an_unknown_format_is_a_usage_error(core_target: str) -> None:
    with pytest.raises(SystemExit) as raised:
        # Parsing fails before anything runs; no wait_for, whose task would swallow SystemExit.
        await run(["episodes", "export", "p/1", "--format", "docx", "--target", core_target])
    assert raised.value.code == 2
