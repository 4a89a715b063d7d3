"""Projects and episodes over REST against a real core (aiohttp's test client)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


async def _create(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/projects", json={"title": "Night Shift", **fields})
    assert response.status == 201, await response.text()
    project: dict[str, Any] = await response.json()
    return project


async def test_crud_round_trip(client: Client) -> None:
    created = await _create(
        client, type="PROJECT_TYPE_THRILLER", logline="A nurse hears things.", language="ko"
    )
    name = created["name"]
    assert name.startswith("projects/")
    assert created["type"] == "PROJECT_TYPE_THRILLER"
    assert created["language"] == "ko"
    assert created["episodeCount"] == 0  # fields without presence are always present

    fetched = await client.get(f"/v1/{name}")
    assert fetched.status == 200
    assert await fetched.json() == created

    listed = await (await client.get("/v1/projects")).json()
    assert name in [project["name"] for project in listed["projects"]]

    deleted = await client.delete(f"/v1/{name}")
    assert deleted.status == 200
    assert await deleted.json() == {}
    gone = await client.get(f"/v1/{name}")
    assert gone.status == 404
    error = (await gone.json())["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["code"] == 404
    reasons = [detail.get("reason") for detail in error["details"]]
    assert "PROJECT_NOT_FOUND" in reasons


async def test_create_answers_201_with_location_and_takes_a_project_id(client: Client) -> None:
    response = await client.post("/v1/projects?projectId=night-shift", json={"title": "N"})
    assert response.status == 201
    assert response.headers["Location"] == "/v1/projects/night-shift"
    assert (await response.json())["name"] == "projects/night-shift"
    again = await client.post("/v1/projects?project_id=night-shift", json={"title": "N"})
    assert again.status == 409
    assert (await again.json())["error"]["status"] == "ALREADY_EXISTS"


async def test_pagination_walks_every_project_once(client: Client) -> None:
    names = {(await _create(client, title=f"Project {index}"))["name"] for index in range(5)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        url = "/v1/projects?pageSize=2" + (f"&pageToken={token}" if token else "")
        page = await (await client.get(url)).json()
        assert len(page["projects"]) <= 2
        seen += [project["name"] for project in page["projects"]]
        pages += 1
        token = page["nextPageToken"]
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted(names)
    snake = await (await client.get("/v1/projects?page_size=5")).json()
    assert len(snake["projects"]) == 5


async def test_patch_changes_only_the_masked_fields(client: Client) -> None:
    created = await _create(client, logline="Old logline", description="Old description")
    name = created["name"]
    response = await client.patch(
        f"/v1/{name}?updateMask=logline",
        json={"logline": "New logline", "description": "Ignored"},
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert updated["logline"] == "New logline"
    assert updated["description"] == "Old description"
    assert updated["title"] == created["title"]


async def test_patch_without_mask_changes_the_fields_in_the_body(client: Client) -> None:
    created = await _create(client, logline="Old", description="Kept")
    response = await client.patch(
        f"/v1/{created['name']}", json={"title": "Day Shift", "type": "PROJECT_TYPE_COMEDY"}
    )
    assert response.status == 200, await response.text()
    updated = await response.json()
    assert (updated["title"], updated["type"]) == ("Day Shift", "PROJECT_TYPE_COMEDY")
    assert (updated["logline"], updated["description"]) == ("Old", "Kept")
    fetched = await (await client.get(f"/v1/{created['name']}")).json()
    assert fetched["title"] == "Day Shift"


async def test_patch_with_another_projects_name_is_refused(client: Client) -> None:
    created = await _create(client)
    response = await client.patch(
        f"/v1/{created['name']}", json={"name": "projects/other", "title": "X"}
    )
    assert response.status == 400
    violations = (await response.json())["error"]["details"][1]["fieldViolations"]
    assert violations[0]["field"] == "project.name"


async def test_missing_resources_are_404(client: Client) -> None:
    project = await _create(client)
    for url in (
        "/v1/projects/p-does-not-exist",
        f"/v1/{project['name']}/episodes/1",
        "/v1/generations/g-does-not-exist",
        "/v1/projects/p-does-not-exist/episodes",
    ):
        response = await client.get(url)
        assert response.status == 404, url
        assert (await response.json())["error"]["status"] == "NOT_FOUND"
    deleted = await client.delete("/v1/projects/p-does-not-exist")
    assert deleted.status == 404


async def test_unknown_routes_and_methods_answer_google_style_json(client: Client) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status == 404
    assert (await missing.json())["error"]["details"][0]["reason"] == "ROUTE_NOT_FOUND"
    wrong = await client.put("/v1/projects")
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["error"]["details"][0]["reason"] == "METHOD_NOT_ALLOWED"


async def test_request_id_is_echoed_and_generated(client: Client) -> None:
    given = await client.get("/v1/projects", headers={"X-Request-Id": "req-123"})
    assert given.headers["X-Request-Id"] == "req-123"
    generated = await client.get("/v1/projects")
    assert len(generated.headers["X-Request-Id"]) == 32
    error = await client.get("/v1/projects/p-missing", headers={"X-Request-Id": "req-404"})
    assert error.headers["X-Request-Id"] == "req-404"
