"""One log line per answered HTTP request: route, status, duration, request id, generation.

The `observe` middleware calls `log_request` once the answer is complete (for an event
stream, when the stream ends). The fields travel as `extra` attributes, so the JSON
formatter installed by the CLI writes them as keys; aiohttp's own access log is silenced
there so each request is logged once.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import state

access_log = logging.getLogger("scriptgen.gateway.access")


def _generation(request: web.Request) -> str:
    generation = request.match_info.get("generation", "")
    return f"generations/{generation}" if generation else ""


def log_request(request: web.Request, route: str, status: int, seconds: float) -> None:
    """Write the access line of `request`, answered with `status` after `seconds`."""
    access_log.info(
        "%s %s %d",
        request.method,
        request.path,
        status,
        extra={
            "request_id": request.get(state.REQUEST_ID, ""),
            "generation": _generation(request),
            "http_method": request.method,
            "route": route,
            "path": request.path,
            "status": status,
            "duration_seconds": round(seconds, 6),
            "remote": request.remote or "",
        },
    )
