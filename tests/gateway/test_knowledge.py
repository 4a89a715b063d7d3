"""Story knowledge over REST against a real core: add, list, get, delete, and the errors."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
MINSU = "민수는 야간 간호사다.\n\n그는 옥상에서 동생의 호출기를 찾는다. " * 30


async def _project(client: Client) -> str:
    response = await client.post("/v1/projects", json={"title": "야간 근무", "language": "ko"})
    assert response.status == 201, await response.text()
    name: str = (await response.json())["name"]
    return name


def _violations(body: dict[str, Any]) -> dict[str, str]:
    return {
        violation["field"]: violation["description"]
        for detail in body["error"]["details"]
        for violation in detail.get("fieldViolations", [])
    }


async def test_add_list_get_delete(client: Client) -> None:
    project = await _project(client)
    added = await client.post(
        f"/v1/{project}/knowledge?documentId=minsu",
        json={"kind": "KNOWLEDGE_KIND_CHARACTER_PROFILE", "title": "민수", "text": MINSU},
    )
    assert added.status == 201, await added.text()
    document = await added.json()
    assert document["name"] == f"{project}/knowledge/minsu"
    assert added.headers["Location"] == f"/v1/{project}/knowledge/minsu"
    assert (document["text"], document["title"]) == (MINSU, "민수")
    assert document["characterCount"] == len(MINSU) and document["chunkCount"] >= 1
    assert "민수" in await added.text(), "Korean travels as UTF-8, not \\u escapes"

    world = await client.post(
        f"/v1/{project}/knowledge",
        json={"kind": "KNOWLEDGE_KIND_WORLD_BUILDING", "title": "Seoul General", "text": "A ward."},
    )
    assert world.status == 201

    listed = await (await client.get(f"/v1/{project}/knowledge")).json()
    assert [d["title"] for d in listed["documents"]] == ["민수", "Seoul General"]
    assert all(d["text"] == "" for d in listed["documents"])
    page = await (await client.get(f"/v1/{project}/knowledge?pageSize=1")).json()
    assert len(page["documents"]) == 1 and page["nextPageToken"]
    for kind in ("world-building", "KNOWLEDGE_KIND_WORLD_BUILDING", "3"):
        only = await (await client.get(f"/v1/{project}/knowledge?kind={kind}")).json()
        assert [d["title"] for d in only["documents"]] == ["Seoul General"], kind

    fetched = await client.get(f"/v1/{project}/knowledge/minsu")
    assert fetched.status == 200 and await fetched.json() == document
    deleted = await client.delete(f"/v1/{project}/knowledge/minsu")
    assert (deleted.status, await deleted.json()) == (200, {})
    gone = await client.get(f"/v1/{project}/knowledge/minsu")
    assert gone.status == 404
    error = (await gone.json())["error"]
    assert error["status"] == "NOT_FOUND"
    reasons = [d.get("reason") for d in error["details"]]
    assert "KNOWLEDGE_NOT_FOUND" in reasons


async def test_bad_documents_are_400_naming_the_field(client: Client) -> None:
    project = await _project(client)
    missing_kind = await client.post(f"/v1/{project}/knowledge", json={"title": "T", "text": "x"})
    assert missing_kind.status == 400
    assert list(_violations(await missing_kind.json())) == ["document.kind"]

    unknown = await client.post(
        f"/v1/{project}/knowledge",
        json={"kind": "KNOWLEDGE_KIND_STYLE_GUIDE", "title": "T", "text": "x", "author": "me"},
    )
    assert unknown.status == 400
    assert list(_violations(await unknown.json())) == ["document.author"]

    too_long = await client.post(
        f"/v1/{project}/knowledge",
        json={"kind": "KNOWLEDGE_KIND_STYLE_GUIDE", "title": "T", "text": "x" * 200_001},
    )
    assert too_long.status == 400
    assert list(_violations(await too_long.json())) == ["document.text"]

    bad_kind = await client.get(f"/v1/{project}/knowledge?kind=villain")
    assert bad_kind.status == 400
    assert list(_violations(await bad_kind.json())) == ["kind"]

    no_project = await client.post(
        "/v1/projects/nowhere/knowledge",
        json={"kind": "KNOWLEDGE_KIND_STYLE_GUIDE", "title": "T", "text": "x"},
    )
    assert no_project.status == 404
