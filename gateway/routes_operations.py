"""Routes for operators and tools: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from gateway import state
from gateway.metrics import EXPOSITION_CONTENT_TYPE
from gateway.open_core import GUARD
from gateway.openapi import openapi_document

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    """The process is alive; says nothing about the core."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    """200 while the core's health watch says SERVING (and, beyond loopback, the core
    requires API keys: gateway.open_core), else 503; 503 too once this process stops."""
    if request.app[state.STOPPING].announced:
        return web.json_response({"status": "stopping"}, status=503, headers={"Retry-After": "1"})
    guard = request.app.get(GUARD)
    if request.app[state.READINESS].ready and (guard is None or guard.allows):
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503, headers={"Retry-After": "1"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    """This process's series; with `--workers`, every worker's, labelled by worker."""
    shared = request.app.get(state.WORKER_METRICS)
    if shared is not None:
        body = await shared.scrape()
    else:
        body = request.app[state.METRICS].exposition()
    response = web.Response(body=body)
    # The exposition content type carries a `version` parameter aiohttp's
    # content_type setter would not keep.
    response.headers["Content-Type"] = EXPOSITION_CONTENT_TYPE
    return response


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=openapi_document(), content_type="application/json")
