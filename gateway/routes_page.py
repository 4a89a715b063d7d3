"""The web page: its HTML, stylesheet and JavaScript modules, under a strict CSP.

Everything is a plain file from `static/` (no build step). Only files that exist
there when the gateway starts are served, by exact name, so a path can never
reach outside the folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import grpc
from aiohttp import web

from gateway.errors import ApiError, Reason

routes = web.RouteTableDef()

_STATIC: Final = Path(__file__).parent / "static"
_MODULES: Final = _STATIC / "modules"
_MODULE_NAME: Final = re.compile(r"[a-z][a-z0-9-]*\.js")

#: What the page uses and nothing more: its own scripts, styles and API calls.
#: No inline code, no eval, no frames, no plugins; DOM sinks refuse strings.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _file(path: Path, content_type: str) -> web.Response:
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type,
        charset="utf-8",
        headers=_HEADERS,
    )


@routes.get("/")
async def page(request: web.Request) -> web.StreamResponse:
    return _file(_STATIC / "index.html", "text/html")


@routes.get("/app.js")
async def script(request: web.Request) -> web.StreamResponse:
    return _file(_STATIC / "app.js", "text/javascript")


@routes.get("/app.css")
async def stylesheet(request: web.Request) -> web.StreamResponse:
    return _file(_STATIC / "app.css", "text/css")


#: The page's JavaScript modules, by file name, as found at start.
_MODULE_FILES: Final = frozenset(
    path.name for path in _MODULES.glob("*.js") if _MODULE_NAME.fullmatch(path.name)
)


@routes.get("/modules/{module}")
async def module(request: web.Request) -> web.StreamResponse:
    name = request.match_info["module"]
    if name not in _MODULE_FILES:
        raise ApiError.gateway(
            grpc.StatusCode.NOT_FOUND, Reason.ROUTE_NOT_FOUND, f"The page has no module {name!r}."
        )
    return _file(_MODULES / name, "text/javascript")
