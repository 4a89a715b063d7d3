"""The small web page: HTML, one JS module and a stylesheet, under a strict CSP."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

routes = web.RouteTableDef()

_STATIC: Final = Path(__file__).parent / "static"

#: Only this origin's files may run or be fetched; nothing inline, nothing framed.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str, content_type: str) -> web.Response:
    return web.Response(
        body=(_STATIC / name).read_bytes(),
        content_type=content_type,
        charset="utf-8",
        headers=_HEADERS,
    )


@routes.get("/")
async def page(request: web.Request) -> web.StreamResponse:
    return _file("index.html", "text/html")


@routes.get("/app.js")
async def script(request: web.Request) -> web.StreamResponse:
    return _file("app.js", "text/javascript")


@routes.get("/app.css")
async def stylesheet(request: web.Request) -> web.StreamResponse:
    return _file("app.css", "text/css")
