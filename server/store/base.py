"""The project-store interface every backend implements and the contract tests run against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from scriptgen.v1 import project_pb2

from server.auth.records import DEFAULT_TENANT, KeyStore

#: Fields of a project that UpdateProject may change.
UPDATABLE_PROJECT_FIELDS = (
    "title",
    "type",
    "logline",
    "description",
    "language",
    "audience",
    "tone",
    "target_episode_minutes",
    "status",
)


class ProjectStore(KeyStore, Protocol):
    """Projects and episodes, with episode numbers handed out atomically; and API keys.

    Every project belongs to a tenant and its key is (tenant, project id):
    project ids are unique per tenant only, so two tenants may each have a
    `pilot`, and neither ever sees (or learns of) the other's. Every call is
    for exactly one tenant: the `tenant` given (servicers pass the caller's),
    or with `tenant=None` the tenant in scope (`server.auth.guard.tenant_in_scope`:
    the call being served, which a job's pipeline inherits; else the default
    tenant). Another tenant's project is NOT_FOUND, as if absent.
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> None:
        """Raise Unavailable when the store cannot serve."""

    async def create_project(
        self,
        project_id: str,
        project: project_pb2.Project,
        *,
        request_id: str = "",
        fingerprint: str = "",
        tenant: str = DEFAULT_TENANT,
    ) -> project_pb2.Project:
        """Insert a project of `tenant`; AlreadyExists (PROJECT_EXISTS) when `tenant` has the id.

        With a `request_id` (an idempotency key) the key is saved with the
        project, in one transaction. While the key is kept (REQUEST_ID_TTL_SECONDS)
        a later call with it creates nothing: it answers the project the key
        created when `fingerprint` (a hash of the request) matches, and
        AlreadyExists (REQUEST_ID_REUSED) when it does not — NotFound if that
        project has been deleted since.
        """

    async def get_project(
        self, project_id: str, *, tenant: str | None = None
    ) -> project_pb2.Project:
        """One project; NotFound when absent (or another tenant's)."""

    async def first_owner(self, project_id: str) -> str | None:
        """The tenant of the oldest project with this id, of any tenant (None: none).

        Only for adopting records made when ids were unique across tenants (story
        knowledge written before it carried a tenant): the oldest is that project.
        """

    async def list_projects(
        self, limit: int, after: Sequence[str | int] | None, *, tenant: str | None = None
    ) -> tuple[list[project_pb2.Project], list[str | int] | None]:
        """Projects newest first after a keyset position; the next position or None."""

    async def update_project(
        self,
        project_id: str,
        changes: project_pb2.Project,
        paths: Sequence[str],
        *,
        tenant: str | None = None,
    ) -> project_pb2.Project:
        """Copy the fields named in `paths` from `changes`; NotFound when absent."""

    async def delete_project(
        self, project_id: str, *, force: bool, tenant: str | None = None
    ) -> None:
        """Delete a project (with its episodes when `force`); FailedPrecondition otherwise."""

    async def create_episode(
        self, project_id: str, episode: project_pb2.Episode, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        """Save an episode under the project's next number; never two with one number."""

    async def get_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> project_pb2.Episode:
        """One episode with its script; NotFound when absent."""

    async def list_episodes(
        self,
        project_id: str,
        limit: int,
        after: Sequence[str | int] | None,
        *,
        tenant: str | None = None,
    ) -> tuple[list[project_pb2.Episode], list[str | int] | None]:
        """Episodes by number without script or outline; the next position or None."""

    async def latest_episodes(
        self, project_id: str, count: int, *, tenant: str | None = None
    ) -> list[project_pb2.Episode]:
        """The latest `count` episodes (or fewer), oldest first, with outlines, without scripts.

        One query whatever the number of episodes (the plan stage reads these);
        NotFound when the project is absent.
        """

    async def delete_episode(
        self, project_id: str, number: int, *, tenant: str | None = None
    ) -> None:
        """Delete one episode; NotFound when absent."""
