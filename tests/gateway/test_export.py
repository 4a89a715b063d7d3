"""`GET …/episodes/{episode}:export`: the file, its type and name; a Korean project end to end."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pypdf
from aiohttp.test_utils import TestClient

from server import Core
from tests.gateway.frames import dispatched, read_sse, script_of

Client = TestClient[Any, Any]
SSE = {"Accept": "text/event-stream"}
TYPES = {
    "fountain": "text/plain; charset=utf-8",
    "fdx": "application/xml",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}


async def _written(http: httpx.AsyncClient, project: dict[str, Any], title: str) -> dict[str, Any]:
    """Create `project`, write one episode over SSE; the saved episode's JSON."""
    created = await http.post("/v1/projects", json=project)
    assert created.status_code == 201, created.text
    name = created.json()["name"]
    events = dispatched(
        await read_sse(
            http, f"/v1/{name}/generations", method="POST", json={"title": title}, headers=SSE
        )
    )
    assert events[-1].event == "completed"
    episode_name = json.loads(events[-1].data)["completed"]["episode"]["name"]
    episode: dict[str, Any] = (await http.get(f"/v1/{episode_name}")).json()
    assert episode["script"] == script_of(events)  # the SSE deltas, unmangled
    return episode


async def test_a_korean_project_survives_grpc_sse_storage_knowledge_and_every_export(
    http: httpx.AsyncClient, core: Core
) -> None:
    episode = await _written(
        http,
        {"title": "밤 근무", "language": "ko", "type": "PROJECT_TYPE_THRILLER", "tone": "누아르"},
        "첫 번째 밤",
    )
    script: str = episode["script"]
    dialogue = [line for line in script.splitlines() if line and not line.isascii()]
    assert any("\uac00" <= ch <= "\ud7a3" for ch in script) and dialogue
    assert episode["title"] == "첫 번째 밤" and episode["quality"]["sceneCount"] > 0
    assert "누아르" in episode["promptSnapshot"]["prompts"][1]["user"]

    project_id = episode["name"].split("/")[1]
    passages = await core.knowledge.retrieve(project_id, "첫 번째 밤", token_budget=2000)
    assert any(line in p.text for p in passages for line in dialogue), "indexed into Chroma"

    files: dict[str, httpx.Response] = {}
    for fmt, content_type in TYPES.items():
        response = await http.get(f"/v1/{episode['name']}:export", params={"format": fmt})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == content_type
        assert response.headers["content-disposition"] == (
            f'attachment; filename="{project_id}-e01.{fmt}"'  # a Korean title has no ASCII slug
        )
        files[fmt] = response
    assert files["fountain"].content.decode("utf-8").endswith(script)
    fdx_text = "".join(ET.fromstring(files["fdx"].content).itertext())
    page = files["html"].content.decode("utf-8")
    reader = pypdf.PdfReader(io.BytesIO(files["pdf"].content))
    pdf_text = "\n".join(p.extract_text() for p in reader.pages)
    assert len(reader.pages) >= 2
    for line in dialogue:
        bare = line.removeprefix("@")
        assert bare in fdx_text and bare in page and bare in pdf_text, bare


async def test_english_export_has_a_slugged_file_name(http: httpx.AsyncClient) -> None:
    episode = await _written(http, {"title": "Night Shift", "language": "en"}, "The Long Night")
    response = await http.get(f"/v1/{episode['name']}:export?format=PDF")
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith('-e01-the-long-night.pdf"')
    assert response.content.startswith(b"%PDF")


async def test_bad_requests_are_json_errors(client: Client) -> None:
    created = await client.post("/v1/projects", json={"title": "Night Shift"})
    name = (await created.json())["name"]
    for query, field in (("", "format"), ("?format=docx", "format")):
        response = await client.get(f"/v1/{name}/episodes/1:export{query}")
        assert response.status == 400
        body = await response.json()
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert field in json.dumps(body["error"]["details"])
    missing = await client.get(f"/v1/{name}/episodes/7:export?format=pdf")
    assert missing.status == 404
    assert (await missing.json())["error"]["status"] == "NOT_FOUND"
    unknown = await client.get(f"/v1/{name}/episodes/1:export?format=pdf&pages=2")
    assert unknown.status == 400


async def test_openapi_describes_the_export_route(client: Client) -> None:
    document = await (await client.get("/openapi.json")).json()
    route = document["paths"]["/v1/projects/{project}/episodes/{episode}:export"]["get"]
    assert route["operationId"] == "exportEpisode"
    assert route["parameters"][0]["schema"]["enum"] == list(TYPES)
    assert set(route["responses"]["200"]["content"]) == set(TYPES.values())
