"""The typed async client: one method per RPC, deadlines on every call, retries where safe."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

import grpc
import grpc.aio
from google.protobuf import field_mask_pb2

from scriptgen._config import ClientConfig
from scriptgen._connection import call_metadata, open_channel
from scriptgen._errors import ClientClosedError, RPCError
from scriptgen._stream import GenerationStream
from scriptgen.v1 import (
    generation_pb2,
    generation_service_pb2,
    generation_service_pb2_grpc,
    knowledge_pb2,
    project_pb2,
    project_service_pb2,
    project_service_pb2_grpc,
)

if TYPE_CHECKING:
    from scriptgen.v1.generation_service_pb2_grpc import GenerationServiceAsyncStub
    from scriptgen.v1.project_service_pb2_grpc import ProjectServiceAsyncStub

#: A RESOURCE_EXHAUSTED reason that refused the call before any work: safe to retry.
_RATE_LIMITED = "RATE_LIMITED"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _Paged(Protocol):
    @property
    def next_page_token(self) -> str: ...


_Page = TypeVar("_Page", bound=_Paged)


class Client:
    """An async client of the Scriptgen core.

        async with Client("127.0.0.1:50051") as client:
            project = await client.create_project(title="The Lighthouse")
            async with client.generate(project.name, "Pilot") as stream:
                async for event in stream:
                    ...

    Every unary call has a deadline (`ClientConfig.deadline`, or `deadline=`
    seconds per call). Idempotent calls (get, list, cancel, and
    `create_project`, which sends an idempotency key) are retried on
    UNAVAILABLE and on RESOURCE_EXHAUSTED `RATE_LIMITED`, following
    `ClientConfig.retry` and waiting at least as long as the server's
    RetryInfo asks. The other calls with side effects (update, delete, add a
    knowledge document) are not retried, so a lost response never turns into
    a second change. Failures raise the typed errors of `scriptgen.RPCError`;
    a call after `close()` raises `ClientClosedError`.

    The API key is `ClientConfig.api_key`, or else the `SCRIPTGEN_API_KEY`
    environment variable; it is sent as `authorization: Bearer <key>` and kept
    out of `config.metadata`. With `ClientConfig.tls` the channel uses TLS.

    Create and use a client inside the event loop that runs it: its gRPC
    channel belongs to that loop.
    """

    def __init__(self, target: str | None = None, config: ClientConfig | None = None) -> None:
        config = config or ClientConfig()
        if target is not None:
            config = replace(config, target=target)
        config, self._metadata = call_metadata(config)
        self._config = config
        self._closed = False
        self._channel = open_channel(config)
        self._projects: ProjectServiceAsyncStub = project_service_pb2_grpc.ProjectServiceStub(
            self._channel
        )
        self._generations: GenerationServiceAsyncStub = (
            generation_service_pb2_grpc.GenerationServiceStub(self._channel)
        )

    @property
    def config(self) -> ClientConfig:
        """The settings in effect, target and API key (from the environment, too) included."""
        return self._config

    @property
    def target(self) -> str:
        """Where the core is."""
        return self._config.target

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls still in flight are cancelled, later ones refused."""
        self._closed = True
        await self._channel.close()

    def _is_closed(self) -> bool:
        return self._closed

    # Projects

    async def create_project(
        self,
        project: project_pb2.Project | None = None,
        *,
        title: str | None = None,
        type: project_pb2.ProjectType.ValueType | None = None,
        logline: str | None = None,
        description: str | None = None,
        language: str | None = None,
        audience: str | None = None,
        tone: str | None = None,
        target_episode_minutes: int | None = None,
        status: project_pb2.ProjectStatus.ValueType | None = None,
        project_id: str = "",
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> project_pb2.Project:
        """Create a project from `project` and/or the keyword fields (keywords win).

        `request_id` is the idempotency key: the core answers a repeat of the
        same request with the same key with the project the first one created.
        A random one is chosen when none is given, so the call is retried like
        a read (UNAVAILABLE, RATE_LIMITED) without risking a second project;
        `request_id=""` sends none, and the call is then not retried.
        """
        draft = project_pb2.Project()
        if project is not None:
            draft.CopyFrom(project)
        if title is not None:
            draft.title = title
        if type is not None:
            draft.type = type
        if logline is not None:
            draft.logline = logline
        if description is not None:
            draft.description = description
        if language is not None:
            draft.language = language
        if audience is not None:
            draft.audience = audience
        if tone is not None:
            draft.tone = tone
        if target_episode_minutes is not None:
            draft.target_episode_minutes = target_episode_minutes
        if status is not None:
            draft.status = status
        key = uuid.uuid4().hex if request_id is None else request_id
        response = await self._unary(
            self._projects.CreateProject,
            project_service_pb2.CreateProjectRequest(
                project=draft, project_id=project_id, request_id=key
            ),
            deadline=deadline,
            idempotent=bool(key),
        )
        return response.project

    async def get_project(self, name: str, *, deadline: float | None = None) -> project_pb2.Project:
        """One project by name, `projects/{project}`."""
        response = await self._unary(
            self._projects.GetProject,
            project_service_pb2.GetProjectRequest(name=name),
            deadline=deadline,
        )
        return response.project

    async def list_projects(
        self, page_size: int = 0, page_token: str = "", *, deadline: float | None = None
    ) -> project_service_pb2.ListProjectsResponse:
        """One page of projects, newest first."""
        return await self._unary(
            self._projects.ListProjects,
            project_service_pb2.ListProjectsRequest(page_size=page_size, page_token=page_token),
            deadline=deadline,
        )

    async def iter_projects(
        self, page_size: int = 0, *, deadline: float | None = None
    ) -> AsyncIterator[project_pb2.Project]:
        """Every project, walking the pages; `deadline` applies to each page."""
        async for page in self._pages(
            lambda token: self.list_projects(page_size, token, deadline=deadline)
        ):
            for project in page.projects:
                yield project

    async def update_project(
        self,
        project: project_pb2.Project,
        update_mask: Sequence[str],
        *,
        deadline: float | None = None,
    ) -> project_pb2.Project:
        """Change the fields of `project` named in `update_mask`; `project.name` says which."""
        response = await self._unary(
            self._projects.UpdateProject,
            project_service_pb2.UpdateProjectRequest(
                project=project, update_mask=field_mask_pb2.FieldMask(paths=list(update_mask))
            ),
            deadline=deadline,
            idempotent=False,
        )
        return response.project

    async def delete_project(
        self, name: str, *, force: bool = False, deadline: float | None = None
    ) -> None:
        """Delete a project; `force` also deletes its episodes."""
        await self._unary(
            self._projects.DeleteProject,
            project_service_pb2.DeleteProjectRequest(name=name, force=force),
            deadline=deadline,
            idempotent=False,
        )

    # Episodes

    async def list_episodes(
        self,
        parent: str,
        page_size: int = 0,
        page_token: str = "",
        *,
        deadline: float | None = None,
    ) -> project_service_pb2.ListEpisodesResponse:
        """One page of a project's episodes by number, without their scripts."""
        return await self._unary(
            self._projects.ListEpisodes,
            project_service_pb2.ListEpisodesRequest(
                parent=parent, page_size=page_size, page_token=page_token
            ),
            deadline=deadline,
        )

    async def iter_episodes(
        self, parent: str, page_size: int = 0, *, deadline: float | None = None
    ) -> AsyncIterator[project_pb2.Episode]:
        """Every episode of a project, walking the pages."""
        async for page in self._pages(
            lambda token: self.list_episodes(parent, page_size, token, deadline=deadline)
        ):
            for episode in page.episodes:
                yield episode

    async def get_episode(self, name: str, *, deadline: float | None = None) -> project_pb2.Episode:
        """One episode with its script, `projects/{project}/episodes/{episode}`."""
        response = await self._unary(
            self._projects.GetEpisode,
            project_service_pb2.GetEpisodeRequest(name=name),
            deadline=deadline,
        )
        return response.episode

    async def delete_episode(self, name: str, *, deadline: float | None = None) -> None:
        """Delete one episode; its number is never reused."""
        await self._unary(
            self._projects.DeleteEpisode,
            project_service_pb2.DeleteEpisodeRequest(name=name),
            deadline=deadline,
            idempotent=False,
        )

    async def export_episode(
        self,
        name: str,
        format: project_service_pb2.ExportFormat.ValueType,
        *,
        deadline: float | None = None,
    ) -> project_service_pb2.ExportEpisodeResponse:
        """An episode rendered as a file (Fountain, FDX, HTML or PDF), with its media type."""
        return await self._unary(
            self._projects.ExportEpisode,
            project_service_pb2.ExportEpisodeRequest(name=name, format=format),
            deadline=deadline,
        )

    # Story knowledge

    async def add_knowledge_document(
        self,
        parent: str,
        document: knowledge_pb2.KnowledgeDocument | None = None,
        *,
        kind: knowledge_pb2.KnowledgeKind.ValueType | None = None,
        title: str | None = None,
        text: str | None = None,
        document_id: str = "",
        deadline: float | None = None,
    ) -> knowledge_pb2.KnowledgeDocument:
        """Add a story-knowledge document to project `parent` (keywords win over `document`).

        The core chunks and embeds the whole text, so the default deadline is at
        least 60 seconds.
        """
        draft = knowledge_pb2.KnowledgeDocument()
        if document is not None:
            draft.CopyFrom(document)
        if kind is not None:
            draft.kind = kind
        if title is not None:
            draft.title = title
        if text is not None:
            draft.text = text
        response = await self._unary(
            self._projects.AddKnowledgeDocument,
            project_service_pb2.AddKnowledgeDocumentRequest(
                parent=parent, document=draft, document_id=document_id
            ),
            deadline=deadline if deadline is not None else max(self._config.deadline, 60.0),
            idempotent=False,
        )
        return response.document

    async def list_knowledge_documents(
        self,
        parent: str,
        page_size: int = 0,
        page_token: str = "",
        *,
        kind: knowledge_pb2.KnowledgeKind.ValueType = knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED,
        deadline: float | None = None,
    ) -> project_service_pb2.ListKnowledgeDocumentsResponse:
        """One page of a project's knowledge documents, oldest first, without their text."""
        return await self._unary(
            self._projects.ListKnowledgeDocuments,
            project_service_pb2.ListKnowledgeDocumentsRequest(
                parent=parent, page_size=page_size, page_token=page_token, kind=kind
            ),
            deadline=deadline,
        )

    async def iter_knowledge_documents(
        self,
        parent: str,
        page_size: int = 0,
        *,
        kind: knowledge_pb2.KnowledgeKind.ValueType = knowledge_pb2.KNOWLEDGE_KIND_UNSPECIFIED,
        deadline: float | None = None,
    ) -> AsyncIterator[knowledge_pb2.KnowledgeDocument]:
        """Every knowledge document of a project (of `kind`, if given), walking the pages."""
        async for page in self._pages(
            lambda token: self.list_knowledge_documents(
                parent, page_size, token, kind=kind, deadline=deadline
            )
        ):
            for document in page.documents:
                yield document

    async def get_knowledge_document(
        self, name: str, *, deadline: float | None = None
    ) -> knowledge_pb2.KnowledgeDocument:
        """One document with its text, `projects/{project}/knowledge/{document}`."""
        response = await self._unary(
            self._projects.GetKnowledgeDocument,
            project_service_pb2.GetKnowledgeDocumentRequest(name=name),
            deadline=deadline,
        )
        return response.document

    async def delete_knowledge_document(self, name: str, *, deadline: float | None = None) -> None:
        """Delete one knowledge document; later plans no longer see it."""
        await self._unary(
            self._projects.DeleteKnowledgeDocument,
            project_service_pb2.DeleteKnowledgeDocumentRequest(name=name),
            deadline=deadline,
            idempotent=False,
        )

    # Generations

    def generate(
        self,
        parent: str,
        title: str,
        description: str = "",
        *,
        request_id: str | None = None,
        detach: bool = False,
        preferred_provider: str = "",
        disabled_providers: Sequence[str] = (),
        feature_flags: Sequence[str] = (),
        deadline: float | None = None,
    ) -> GenerationStream:
        """Start writing an episode of `parent` and stream the job's events.

        A random `request_id` is chosen when none is given, so that a retry
        after a broken link re-attaches to the same job instead of starting a
        second one. `preferred_provider`, `disabled_providers` and
        `feature_flags` narrow the core's provider chain for this job (sent as
        `x-preferred-provider`, `x-disabled-providers`, `x-feature-flags`).
        `deadline` (seconds) bounds the whole stream, resumes included; by
        default a stream may run as long as the job does.
        """
        routing: list[tuple[str, str]] = []
        if preferred_provider:
            routing.append(("x-preferred-provider", preferred_provider))
        if disabled_providers:
            routing.append(("x-disabled-providers", ",".join(disabled_providers)))
        if feature_flags:
            routing.append(("x-feature-flags", ",".join(feature_flags)))
        request = generation_service_pb2.GenerateScriptRequest(
            parent=parent,
            title=title,
            description=description,
            request_id=request_id or uuid.uuid4().hex,
            detach=detach,
        )
        return GenerationStream(
            self._generations,
            self._config,
            request=request,
            deadline=deadline,
            metadata=(*self._metadata, *routing),
            closed=self._is_closed,
        )

    def follow(
        self, name: str, after_sequence: int = 0, *, deadline: float | None = None
    ) -> GenerationStream:
        """Stream the events of job `name` after `after_sequence`: replay, then live.

        Following a job that has already ended from its last sequence ends at
        once, without an event.
        """
        return GenerationStream(
            self._generations,
            self._config,
            generation=name,
            after_sequence=after_sequence,
            deadline=deadline,
            metadata=self._metadata,
            closed=self._is_closed,
        )

    async def get_generation(
        self, name: str, *, deadline: float | None = None
    ) -> generation_pb2.Generation:
        """One job by name, `generations/{generation}`."""
        response = await self._unary(
            self._generations.GetGeneration,
            generation_service_pb2.GetGenerationRequest(name=name),
            deadline=deadline,
        )
        return response.generation

    async def list_generations(
        self,
        parent: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        deadline: float | None = None,
    ) -> generation_service_pb2.ListGenerationsResponse:
        """One page of jobs, newest first; `parent` narrows to one project's."""
        return await self._unary(
            self._generations.ListGenerations,
            generation_service_pb2.ListGenerationsRequest(
                parent=parent, page_size=page_size, page_token=page_token
            ),
            deadline=deadline,
        )

    async def iter_generations(
        self, parent: str = "", page_size: int = 0, *, deadline: float | None = None
    ) -> AsyncIterator[generation_pb2.Generation]:
        """Every job (of `parent`, if given), walking the pages."""
        async for page in self._pages(
            lambda token: self.list_generations(parent, page_size, token, deadline=deadline)
        ):
            for generation in page.generations:
                yield generation

    async def cancel_generation(
        self, name: str, *, deadline: float | None = None
    ) -> generation_pb2.Generation:
        """Cancel a job; an ended job comes back unchanged, so this is safe to repeat."""
        response = await self._unary(
            self._generations.CancelGeneration,
            generation_service_pb2.CancelGenerationRequest(name=name),
            deadline=deadline,
        )
        return response.generation

    # Plumbing

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        deadline: float | None,
        idempotent: bool = True,
    ) -> _Response:
        budget = self._config.deadline if deadline is None else deadline
        expiry = time.monotonic() + budget
        policy = self._config.retry
        failures = 0
        while True:
            if self._closed:
                raise ClientClosedError("the client is closed")
            remaining = max(0.0, expiry - time.monotonic())
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.UsageError as closed:
                raise ClientClosedError(f"the client is closed: {closed}") from closed
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    # close() cancelled the call; the caller itself was not cancelled.
                    raise ClientClosedError("the client was closed during the call") from None
                raise
            except grpc.aio.AioRpcError as raw:
                error = RPCError.from_call(raw)
                failures += 1
                delay = policy.retry_delay(failures, error.retry_delay)
                retry = idempotent and _retryable(error) and failures < policy.max_attempts
                # Sleeping past the deadline would only turn the error into a vaguer one.
                if not retry or delay is None or time.monotonic() + delay >= expiry:
                    raise error from raw
            await asyncio.sleep(delay)

    @staticmethod
    async def _pages(fetch: Callable[[str], Awaitable[_Page]]) -> AsyncIterator[_Page]:
        token = ""
        while True:
            page = await fetch(token)
            yield page
            token = page.next_page_token
            if not token:
                return


def _retryable(error: RPCError) -> bool:
    """Whether an idempotent call that failed with `error` may be tried again."""
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    # A rate limit refuses the call before the server does anything for it.
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == _RATE_LIMITED
