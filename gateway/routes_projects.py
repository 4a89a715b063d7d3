"""HTTP routes of ProjectService: projects and their episodes."""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from google.protobuf import field_mask_pb2
from scriptgen.v1 import project_pb2, project_service_pb2
from scriptgen.v1.project_service_pb2 import ExportFormat

from gateway import state
from gateway.codec import field_names, json_response, parse_message
from gateway.errors import ApiError, Reason
from gateway.inputs import Query, json_object, path_id, snake_case

routes = web.RouteTableDef()

#: The HTTP face of a request's `request_id`: a retry with the same key and body
#: gets the first answer; another body with it is 409 (REQUEST_ID_REUSED).
IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
_IDEMPOTENCY_KEY: Final = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: `?format=` of the export route and the ExportFormat each names.
EXPORT_FORMATS: Final[dict[str, ExportFormat.ValueType]] = {
    "fountain": project_service_pb2.EXPORT_FORMAT_FOUNTAIN,
    "fdx": project_service_pb2.EXPORT_FORMAT_FDX,
    "html": project_service_pb2.EXPORT_FORMAT_HTML,
    "pdf": project_service_pb2.EXPORT_FORMAT_PDF,
}


def idempotency_key(request: web.Request, body_request_id: str = "") -> str:
    """The request_id to send: the Idempotency-Key header, else the body's `requestId`."""
    header = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if header is None:
        return body_request_id
    if not _IDEMPOTENCY_KEY.fullmatch(header):
        raise ApiError.invalid(
            Reason.INVALID_HEADER,
            f"Invalid {IDEMPOTENCY_KEY_HEADER} header.",
            {IDEMPOTENCY_KEY_HEADER: "Must be 1-100 characters of [A-Za-z0-9_.-]."},
        )
    if body_request_id and body_request_id != header:
        raise ApiError.invalid(
            Reason.INVALID_FIELD,
            f"The {IDEMPOTENCY_KEY_HEADER} header and the body's requestId differ.",
            {"requestId": f"Must be absent or equal to the {IDEMPOTENCY_KEY_HEADER} header."},
        )
    return header


def _project_name(request: web.Request) -> str:
    return f"projects/{path_id(request, 'project')}"


def _episode_name(request: web.Request) -> str:
    return f"{_project_name(request)}/episodes/{path_id(request, 'episode')}"


def _page(query: Query) -> tuple[int, str]:
    return query.integer("pageSize") or 0, query.text("pageToken") or ""


@routes.post("/v1/projects")
async def create_project(request: web.Request) -> web.StreamResponse:
    query = Query(request)
    project_id = query.text("projectId") or ""
    query.finish()
    request_id = idempotency_key(request)
    body = await json_object(request, request.app[state.CONFIG].max_body_bytes)
    project = parse_message(body, project_pb2.Project(), path="project")
    reply = await request.app[state.CORE].projects.CreateProject(
        project_service_pb2.CreateProjectRequest(
            project=project, project_id=project_id, request_id=request_id
        ),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    location = f"/v1/{reply.project.name}"
    return json_response(reply.project, status=201, headers={"Location": location})


@routes.get("/v1/projects")
async def list_projects(request: web.Request) -> web.StreamResponse:
    query = Query(request)
    page_size, page_token = _page(query)
    query.finish()
    reply = await request.app[state.CORE].projects.ListProjects(
        project_service_pb2.ListProjectsRequest(page_size=page_size, page_token=page_token),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)


@routes.get("/v1/projects/{project}")
async def get_project(request: web.Request) -> web.StreamResponse:
    name = _project_name(request)
    Query(request).finish()
    reply = await request.app[state.CORE].projects.GetProject(
        project_service_pb2.GetProjectRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply.project)


@routes.patch("/v1/projects/{project}")
async def update_project(request: web.Request) -> web.StreamResponse:
    name = _project_name(request)
    query = Query(request)
    mask_param = query.text("updateMask")
    query.finish()
    body = await json_object(request, request.app[state.CONFIG].max_body_bytes)
    project = parse_message(body, project_pb2.Project(), path="project")
    if project.name and project.name != name:
        raise ApiError.invalid(
            Reason.INVALID_FIELD,
            "The body names another project than the path.",
            {"project.name": f"Must be empty or {name!r}."},
        )
    project.name = name
    if mask_param is None:
        # Without a mask, the fields the client sent are the fields it means to change.
        paths = [path for path in field_names(body, project.DESCRIPTOR) if path != "name"]
    else:
        paths = [snake_case(path.strip()) for path in mask_param.split(",") if path.strip()]
    reply = await request.app[state.CORE].projects.UpdateProject(
        project_service_pb2.UpdateProjectRequest(
            project=project, update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply.project)


@routes.delete("/v1/projects/{project}")
async def delete_project(request: web.Request) -> web.StreamResponse:
    name = _project_name(request)
    query = Query(request)
    force = query.boolean("force") or False
    query.finish()
    reply = await request.app[state.CORE].projects.DeleteProject(
        project_service_pb2.DeleteProjectRequest(name=name, force=force),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)


@routes.get("/v1/projects/{project}/episodes")
async def list_episodes(request: web.Request) -> web.StreamResponse:
    parent = _project_name(request)
    query = Query(request)
    page_size, page_token = _page(query)
    query.finish()
    reply = await request.app[state.CORE].projects.ListEpisodes(
        project_service_pb2.ListEpisodesRequest(
            parent=parent, page_size=page_size, page_token=page_token
        ),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)


# Registered before `…/episodes/{episode}`, whose `{episode}` would also match `1:export`.
@routes.get("/v1/projects/{project}/episodes/{episode}:export")
async def export_episode(request: web.Request) -> web.StreamResponse:
    """The episode as a file (Fountain, FDX, HTML or PDF), with its type and a file name."""
    name = _episode_name(request)
    query = Query(request)
    wanted = (query.text("format") or "").lower()
    query.finish()
    if wanted not in EXPORT_FORMATS:
        raise ApiError.invalid(
            Reason.INVALID_QUERY_PARAMETER,
            "Invalid export format." if wanted else "The export format is required.",
            {"format": f"Must be one of {', '.join(EXPORT_FORMATS)}."},
        )
    reply = await request.app[state.CORE].projects.ExportEpisode(
        project_service_pb2.ExportEpisodeRequest(name=name, format=EXPORT_FORMATS[wanted]),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return web.Response(
        body=reply.content,
        headers={
            "Content-Type": reply.content_type,
            "Content-Disposition": f'attachment; filename="{reply.filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/v1/projects/{project}/episodes/{episode}")
async def get_episode(request: web.Request) -> web.StreamResponse:
    name = _episode_name(request)
    Query(request).finish()
    reply = await request.app[state.CORE].projects.GetEpisode(
        project_service_pb2.GetEpisodeRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply.episode)


@routes.delete("/v1/projects/{project}/episodes/{episode}")
async def delete_episode(request: web.Request) -> web.StreamResponse:
    name = _episode_name(request)
    Query(request).finish()
    reply = await request.app[state.CORE].projects.DeleteEpisode(
        project_service_pb2.DeleteEpisodeRequest(name=name),
        metadata=state.call_metadata(request),
        timeout=state.unary_deadline(request),
    )
    return json_response(reply)
