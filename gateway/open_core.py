"""A gateway listening beyond loopback never exposes a core that takes calls without a key.

`SCRIPTGEN_AUTH=disabled` is for loopback only: a core refuses to listen beyond it
and `scriptgen serve` refuses to put its gateway there. A gateway started on its
own cannot read its core's settings, so it asks the core: whenever the core turns
SERVING, and every `RECHECK_SECONDS` while it is, it makes one call with no key
(ListProjects, page size 1). UNAUTHENTICATED means the core requires keys; an
answer means it does not. Until a core has said it requires keys, a gateway
listening beyond loopback answers every `/v1/…` request 503 (UNAVAILABLE, reason
`CORE_AUTH_DISABLED` once a core answered without a key, `CORE_AUTH_UNVERIFIED`
before any answer), `/readyz` says not ready, and finding an open core is logged
at ERROR. A gateway on a loopback address asks nothing: it exposes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import grpc
import grpc.aio
from aiohttp import web
from aiohttp.typedefs import Handler
from scriptgen.v1 import project_service_pb2

from gateway import state
from gateway.errors import ApiError, Reason
from gateway.readiness import Readiness

if TYPE_CHECKING:
    from scriptgen.v1.project_service_pb2_grpc import ProjectServiceAsyncStub

_log = logging.getLogger(__name__)

#: How often a ready core is asked again (a replica may have been replaced).
RECHECK_SECONDS: Final = 60.0
#: Pause before asking again after an answer that said nothing (the core was busy).
RETRY_SECONDS: Final = 1.0
_PROBE_DEADLINE_SECONDS: Final = 5.0
_API_PREFIX: Final = "/v1/"


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts local connections (empty: every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OpenCoreGuard:
    """Whether this gateway may pass API calls on: always on loopback, else once the
    core has refused a call without a key."""

    def __init__(
        self,
        projects: ProjectServiceAsyncStub,
        readiness: Readiness,
        *,
        exposed: bool,
        core_target: str,
    ) -> None:
        self._projects = projects
        self._readiness = readiness
        self._core_target = core_target
        #: Whether this gateway listens beyond loopback, so the check matters.
        self.exposed = exposed
        #: The last core asked requires keys.
        self._keys_required = False
        #: The last core asked answered without a key.
        self.core_open = False
        self._task: asyncio.Task[None] | None = None

    @property
    def allows(self) -> bool:
        return not self.exposed or self._keys_required

    def refusal(self) -> ApiError:
        if self.core_open:
            return ApiError.gateway(
                grpc.StatusCode.UNAVAILABLE,
                Reason.CORE_AUTH_DISABLED,
                "This gateway is reachable from other machines and its core takes calls"
                " without an API key (SCRIPTGEN_AUTH=disabled is for loopback only);"
                " it refuses every API call until the core requires keys.",
            )
        return ApiError.gateway(
            grpc.StatusCode.UNAVAILABLE,
            Reason.CORE_AUTH_UNVERIFIED,
            "The gateway has not yet confirmed that its core requires API keys; retry later.",
        )

    def start(self) -> None:
        if self.exposed:
            self._task = asyncio.create_task(self._follow(), name="scriptgen-open-core-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            await self._readiness.wait_for(True)
            pause = RECHECK_SECONDS if await self._ask() else RETRY_SECONDS
            # Asked again after the pause, or as soon as the core comes back after a loss.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._readiness.wait_for(False)
                    self._keys_required = False

    async def _ask(self) -> bool:
        """Ask the core whether it requires keys; False when its answer said nothing."""
        try:
            await self._projects.ListProjects(
                project_service_pb2.ListProjectsRequest(page_size=1),
                timeout=_PROBE_DEADLINE_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAUTHENTICATED:
                _log.debug("could not ask the core about keys: %s", error.code().name)
                return False
            if self.core_open:
                _log.warning("the core at %s requires API keys again", self._core_target)
            self._keys_required, self.core_open = True, False
            return True
        if not self.core_open:
            _log.error(
                "the core at %s answers calls without an API key (SCRIPTGEN_AUTH=disabled),"
                " and this gateway listens beyond loopback: every API call is refused"
                " (503 CORE_AUTH_DISABLED) until the core requires keys. Turn auth on,"
                " or listen on 127.0.0.1.",
                self._core_target,
            )
        self._keys_required, self.core_open = False, True
        return True


#: The app's guard; an app without one passes every call on.
GUARD = web.AppKey("open_core_guard", OpenCoreGuard)


@web.middleware
async def refuse_open_core(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API calls while the guard does not allow them: 503 (ApiError)."""
    guard = request.app.get(GUARD)
    if guard is not None and not guard.allows and request.path.startswith(_API_PREFIX):
        raise guard.refusal()
    return await handler(request)


async def guarded(app: web.Application) -> AsyncIterator[None]:
    """`cleanup_ctx`: the guard of the app's core, running while the app runs."""
    config = app[state.CONFIG]
    guard = OpenCoreGuard(
        app[state.CORE].projects,
        app[state.READINESS],
        exposed=not is_loopback(config.http_host),
        core_target=config.core_target,
    )
    app[GUARD] = guard
    guard.start()
    yield
    await guard.stop()
