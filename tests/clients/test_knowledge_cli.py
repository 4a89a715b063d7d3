"""`scriptgen knowledge add|list|show|delete` and the SDK's knowledge methods on a real core."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from scriptgen import Client, RPCError
from scriptgen.cli import run
from scriptgen.cli.knowledge import document_name, knowledge_kind
from scriptgen.v1 import knowledge_pb2, project_pb2

#: Runs `scriptgen ARGS...` and returns (exit status, stdout, stderr).
Run = Callable[..., Awaitable[tuple[int, str, str]]]
MINSU = "민수는 야간 간호사다.\n그는 옥상에서 동생의 호출기를 찾는다.\n"


@pytest.fixture
def scriptgen(core_target: str, capsys: pytest.CaptureFixture[str]) -> Run:
    async def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        args: Sequence[str] = [*argv, "--target", core_target]
        status = await asyncio.wait_for(run(args), timeout=60)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


async def test_add_list_show_delete(
    scriptgen: Run,
    client: Client,
    project: project_pb2.Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = tmp_path / "minsu.md"
    profile.write_text(MINSU, encoding="utf-8")
    project_id = project.name.removeprefix("projects/")
    status, out, err = await scriptgen(
        "knowledge", "add", project_id, "--kind", "character-profile", "--title", "민수",
        "--file", str(profile), "--id", "minsu",
    )  # fmt: skip
    assert (status, out, err) == (0, f"{project.name}/knowledge/minsu\n", "")
    assert (await client.get_knowledge_document(f"{project.name}/knowledge/minsu")).text == MINSU

    monkeypatch.setattr("sys.stdin", io.StringIO("Every scene ends on a question.\n"))
    status, out, _ = await scriptgen(
        "knowledge", "add", project.name, "--kind", "STYLE_GUIDE", "--title", "House style"
    )
    assert status == 0
    style_name = out.strip()

    status, out, _ = await scriptgen("knowledge", "list", project_id)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "KIND", "CHARACTERS", "CREATED", "TITLE"]
    assert [row.split()[:3] for row in rows] == [
        [f"{project.name}/knowledge/minsu", "character-profile", str(len(MINSU))],
        [style_name, "style-guide", "32"],
    ]
    status, out, _ = await scriptgen(
        "knowledge", "list", project_id, "--kind", "style-guide", "--json"
    )
    assert [d["title"] for d in json.loads(out)["documents"]] == ["House style"]

    status, out, err = await scriptgen("knowledge", "show", f"{project_id}/minsu")
    assert (status, out) == (0, MINSU)
    assert "character-profile '민수'" in err

    status, out, _ = await scriptgen("knowledge", "delete", f"{project_id}/minsu")
    assert (status, out) == (0, f"deleted {project.name}/knowledge/minsu\n")
    status, out, err = await scriptgen("knowledge", "show", f"{project_id}/minsu")
    assert (status, out) == (1, "")
    assert "NOT_FOUND" in err and "KNOWLEDGE_NOT_FOUND" in err


async def test_bad_input_is_one_line(scriptgen: Run, project: project_pb2.Project) -> None:
    status, _, err = await scriptgen(
        "knowledge", "add", project.name, "--kind", "character-profile", "--title", "T",
        "--text", "x" * 200_001,
    )  # fmt: skip
    assert status == 1
    assert "INVALID_ARGUMENT" in err and "document.text" in err


def test_names_and_kinds() -> None:
    assert document_name("p1/minsu") == "projects/p1/knowledge/minsu"
    assert document_name("projects/p1/knowledge/minsu") == "projects/p1/knowledge/minsu"
    assert knowledge_kind("world_building") == knowledge_pb2.KNOWLEDGE_KIND_WORLD_BUILDING
    assert (
        knowledge_kind("KNOWLEDGE_KIND_RESEARCH_NOTE") == knowledge_pb2.KNOWLEDGE_KIND_RESEARCH_NOTE
    )
    for bad in ("unspecified", "villain"):
        with pytest.raises(argparse.ArgumentTypeError):
            knowledge_kind(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        document_name("p1")


async def test_sdk_pages_and_errors(client: Client, project: project_pb2.Project) -> None:
    for index in range(3):
        await client.add_knowledge_document(
            project.name,
            kind=knowledge_pb2.KNOWLEDGE_KIND_RESEARCH_NOTE,
            title=f"Note {index}",
            text=f"Fact number {index}.",
        )
    titles = [d.title async for d in client.iter_knowledge_documents(project.name, page_size=2)]
    assert titles == ["Note 0", "Note 1", "Note 2"]
    with pytest.raises(RPCError) as raised:
        await client.add_knowledge_document(project.name, title="No kind", text="x")
    assert raised.value.reason == "FIELD_INVALID"
    assert [v.field for v in raised.value.field_violations] == ["document.kind"]
