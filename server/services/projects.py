"""ProjectService: projects and their episodes, validated against the documented limits."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Any

from grpc import aio
from scriptgen.v1 import project_pb2, project_service_pb2, project_service_pb2_grpc

from server import exports, limits, pagination
from server.auth.guard import Guard, tenant_in_scope
from server.errors import FailedPrecondition, FieldViolation, invalid
from server.knowledge import KnowledgeStore
from server.metrics import CoreMetrics
from server.services.calls import unary
from server.services.knowledge import KnowledgeRpcs
from server.store.base import UPDATABLE_PROJECT_FIELDS, ProjectStore

Context = aio.ServicerContext[Any, Any]
_DEFAULT_LANGUAGE = "en"


def _check_project_fields(
    project: project_pb2.Project, prefix: str, paths: tuple[str, ...] | list[str]
) -> None:
    violations: list[FieldViolation] = []
    if "title" in paths:
        limits.check_title(f"{prefix}title", project.title, violations)
    if "logline" in paths:
        limits.check_text(f"{prefix}logline", project.logline, limits.LOGLINE_MAX, violations)
    if "description" in paths:
        limits.check_text(
            f"{prefix}description", project.description, limits.DESCRIPTION_MAX, violations
        )
    if "language" in paths:
        limits.check_language(f"{prefix}language", project.language, violations)
    if "type" in paths and project.type not in project_pb2.ProjectType.values():
        violations.append(FieldViolation(f"{prefix}type", "is not a known ProjectType"))
    if "audience" in paths:
        limits.check_text(f"{prefix}audience", project.audience, limits.AUDIENCE_MAX, violations)
    if "tone" in paths:
        limits.check_text(f"{prefix}tone", project.tone, limits.TONE_MAX, violations)
    minutes = project.target_episode_minutes
    if "target_episode_minutes" in paths and not 0 <= minutes <= limits.TARGET_EPISODE_MINUTES_MAX:
        violations.append(
            FieldViolation(
                f"{prefix}target_episode_minutes",
                f"must be 0 (the type's default) or 1..{limits.TARGET_EPISODE_MINUTES_MAX}",
            )
        )
    if "status" in paths and project.status not in project_pb2.ProjectStatus.values():
        violations.append(FieldViolation(f"{prefix}status", "is not a known ProjectStatus"))
    limits.raise_if(violations)


def _fingerprint(request: project_service_pb2.CreateProjectRequest) -> str:
    """A hash of the request as the client sent it, without its idempotency key."""
    canonical = project_service_pb2.CreateProjectRequest()
    canonical.CopyFrom(request)
    canonical.request_id = ""
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


class ProjectServicer(KnowledgeRpcs, project_service_pb2_grpc.ProjectServiceServicer):
    """Implements scriptgen.v1.ProjectService on a ProjectStore."""

    def __init__(
        self,
        store: ProjectStore,
        metrics: CoreMetrics,
        pdf_fonts: exports.PdfFonts | None = None,
        knowledge: KnowledgeStore | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        #: Checks every call's key and limits; None: no auth (one tenant, `default`).
        self.guard = guard
        self.knowledge = knowledge
        self.pdf_fonts = pdf_fonts or exports.PdfFonts()

    @unary("CreateProject")
    async def CreateProject(
        self, request: project_service_pb2.CreateProjectRequest, context: Context
    ) -> project_service_pb2.CreateProjectResponse:
        if not request.HasField("project"):
            raise invalid("project", "is required")
        violations: list[FieldViolation] = []
        limits.check_id("project_id", request.project_id, violations)
        limits.check_request_id("request_id", request.request_id, violations)
        limits.raise_if(violations)
        project = project_pb2.Project()
        project.CopyFrom(request.project)
        _check_project_fields(project, "project.", UPDATABLE_PROJECT_FIELDS)
        if project.type == project_pb2.PROJECT_TYPE_UNSPECIFIED:
            project.type = project_pb2.PROJECT_TYPE_DRAMA
        if project.status == project_pb2.PROJECT_STATUS_UNSPECIFIED:
            project.status = project_pb2.PROJECT_STATUS_ACTIVE
        project.language = project.language or _DEFAULT_LANGUAGE
        project_id = request.project_id or f"p{secrets.token_hex(8)}"
        created = await self.store.create_project(
            project_id,
            project,
            request_id=request.request_id,
            fingerprint=_fingerprint(request) if request.request_id else "",
            tenant=tenant_in_scope(),
        )
        return project_service_pb2.CreateProjectResponse(project=created)

    @unary("GetProject")
    async def GetProject(
        self, request: project_service_pb2.GetProjectRequest, context: Context
    ) -> project_service_pb2.GetProjectResponse:
        project_id = limits.project_id("name", request.name)
        return project_service_pb2.GetProjectResponse(
            project=await self.store.get_project(project_id, tenant=tenant_in_scope())
        )

    @unary("ListProjects")
    async def ListProjects(
        self, request: project_service_pb2.ListProjectsRequest, context: Context
    ) -> project_service_pb2.ListProjectsResponse:
        size = limits.page_size("page_size", request.page_size)
        after = pagination.decode("page_token", "projects", request.page_token)
        projects, position = await self.store.list_projects(size, after, tenant=tenant_in_scope())
        token = pagination.encode("projects", position) if position is not None else ""
        return project_service_pb2.ListProjectsResponse(projects=projects, next_page_token=token)

    @unary("UpdateProject")
    async def UpdateProject(
        self, request: project_service_pb2.UpdateProjectRequest, context: Context
    ) -> project_service_pb2.UpdateProjectResponse:
        if not request.HasField("project"):
            raise invalid("project", "is required")
        project_id = limits.project_id("project.name", request.project.name)
        paths = list(dict.fromkeys(request.update_mask.paths))
        if not paths:
            raise invalid("update_mask", "must name at least one field to update")
        unknown = [p for p in paths if p not in UPDATABLE_PROJECT_FIELDS]
        if unknown:
            raise invalid(
                "update_mask",
                f"cannot update {', '.join(unknown)};"
                f" updatable: {', '.join(UPDATABLE_PROJECT_FIELDS)}",
            )
        changes = project_pb2.Project()
        changes.CopyFrom(request.project)
        _check_project_fields(changes, "project.", paths)
        if "type" in paths and changes.type == project_pb2.PROJECT_TYPE_UNSPECIFIED:
            changes.type = project_pb2.PROJECT_TYPE_DRAMA
        if "status" in paths and changes.status == project_pb2.PROJECT_STATUS_UNSPECIFIED:
            changes.status = project_pb2.PROJECT_STATUS_ACTIVE
        if "language" in paths:
            changes.language = changes.language or _DEFAULT_LANGUAGE
        updated = await self.store.update_project(
            project_id, changes, paths, tenant=tenant_in_scope()
        )
        return project_service_pb2.UpdateProjectResponse(project=updated)

    @unary("DeleteProject")
    async def DeleteProject(
        self, request: project_service_pb2.DeleteProjectRequest, context: Context
    ) -> project_service_pb2.DeleteProjectResponse:
        project_id = limits.project_id("name", request.name)
        # Another tenant's project is NOT_FOUND before anything of it is touched.
        await self.store.get_project(project_id, tenant=tenant_in_scope())
        await self.forget_project_knowledge(project_id, force=request.force)
        await self.store.delete_project(project_id, force=request.force, tenant=tenant_in_scope())
        return project_service_pb2.DeleteProjectResponse()

    @unary("ListEpisodes")
    async def ListEpisodes(
        self, request: project_service_pb2.ListEpisodesRequest, context: Context
    ) -> project_service_pb2.ListEpisodesResponse:
        project_id = limits.project_id("parent", request.parent)
        size = limits.page_size("page_size", request.page_size)
        after = pagination.decode("page_token", f"episodes:{project_id}", request.page_token)
        await self.store.get_project(project_id, tenant=tenant_in_scope())
        episodes, position = await self.store.list_episodes(
            project_id, size, after, tenant=tenant_in_scope()
        )
        token = (
            pagination.encode(f"episodes:{project_id}", position) if position is not None else ""
        )
        return project_service_pb2.ListEpisodesResponse(episodes=episodes, next_page_token=token)

    @unary("GetEpisode")
    async def GetEpisode(
        self, request: project_service_pb2.GetEpisodeRequest, context: Context
    ) -> project_service_pb2.GetEpisodeResponse:
        name = limits.episode_name("name", request.name)
        await self.store.get_project(name.project, tenant=tenant_in_scope())
        episode = await self.store.get_episode(name.project, name.number, tenant=tenant_in_scope())
        return project_service_pb2.GetEpisodeResponse(episode=episode)

    @unary("DeleteEpisode")
    async def DeleteEpisode(
        self, request: project_service_pb2.DeleteEpisodeRequest, context: Context
    ) -> project_service_pb2.DeleteEpisodeResponse:
        name = limits.episode_name("name", request.name)
        await self.store.get_project(name.project, tenant=tenant_in_scope())
        await self.forget_episode_knowledge(name.project, name.number)
        await self.store.delete_episode(name.project, name.number, tenant=tenant_in_scope())
        return project_service_pb2.DeleteEpisodeResponse()

    @unary("ExportEpisode")
    async def ExportEpisode(
        self, request: project_service_pb2.ExportEpisodeRequest, context: Context
    ) -> project_service_pb2.ExportEpisodeResponse:
        name = limits.episode_name("name", request.name)
        if request.format not in project_service_pb2.ExportFormat.values() or (
            request.format == project_service_pb2.EXPORT_FORMAT_UNSPECIFIED
        ):
            raise invalid("format", "must be FOUNTAIN, FDX, HTML or PDF")
        project = await self.store.get_project(name.project, tenant=tenant_in_scope())
        episode = await self.store.get_episode(name.project, name.number, tenant=tenant_in_scope())
        try:
            # Rendering (a PDF above all) is CPU work: keep it off the event loop.
            exported = await asyncio.to_thread(
                exports.render, project, episode, request.format, self.pdf_fonts
            )
        except exports.FontMissing as error:
            raise FailedPrecondition(str(error), reason="EXPORT_FONT_MISSING") from None
        return project_service_pb2.ExportEpisodeResponse(
            content=exported.content,
            content_type=exported.content_type,
            filename=exported.filename,
        )
