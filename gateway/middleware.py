"""What wraps every request: its request id and call metadata, metrics, and JSON errors."""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import grpc.aio
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import state
from gateway.access_log import log_request
from gateway.codec import json_response
from gateway.errors import ApiError, Reason
from gateway.inputs import (
    REQUEST_ID_HEADER,
    check_single_valued_headers,
    client_request_id,
    header_value,
)
from gateway.rate_limits import begin as begin_rate_limit_state
from gateway.security import credentials

_log = logging.getLogger(__name__)

#: Headers passed through to the core, which narrows its provider chain by them.
FORWARDED_HEADERS = ("x-preferred-provider", "x-disabled-providers", "x-feature-flags")
#: The status recorded for a request whose client went away before the answer.
CLIENT_CLOSED = 499

#: HTTP statuses that are authentication refusals, and the reason label they count under.
_AUTH_REJECTIONS = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request, labelled by route template, not raw path."""
    metrics = request.app[state.METRICS]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    except BaseException:
        status = CLIENT_CLOSED
        raise
    finally:
        metrics.requests.labels(route=route, method=request.method, status=str(status)).inc()
        if status in _AUTH_REJECTIONS:
            metrics.auth_rejections.labels(_AUTH_REJECTIONS[status]).inc()
        elif status == 429:
            metrics.rate_limit_rejections.labels("any").inc()
        elapsed = time.monotonic() - started
        metrics.request_duration.labels(route=route, method=request.method).observe(elapsed)
        log_request(request, route, status, elapsed)


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the client's, if usable), the metadata calls carry, and a
    rate-limit state for the X-RateLimit-* the core reports."""
    refused: ApiError | None = None
    try:
        client_id = client_request_id(request)
    except ApiError as error:
        refused, client_id = error, None
    if client_id is None and refused is None and REQUEST_ID_HEADER in request.headers:
        # An unusable client id (empty, not printable ASCII) is replaced rather than refused:
        # it is only a label.
        _log.debug("replaced unusable request id %r", request.headers[REQUEST_ID_HEADER])
    request_id = client_id or uuid.uuid4().hex
    request[state.REQUEST_ID] = request_id
    state.CURRENT_REQUEST_ID.set(request_id)
    # Filled by the calls made for this request: X-RateLimit-* on its answer.
    begin_rate_limit_state(request)
    metadata: list[tuple[str, str]] = [("x-request-id", request_id)]
    try:
        if refused is not None:
            raise refused
        check_single_valued_headers(request)
        for name in FORWARDED_HEADERS:
            value = header_value(request, name)
            if value is not None:
                metadata.append((name, value))
        # Checked by the core, which owns auth; the gateway only passes it on.
        authorization = credentials(request)
    except ApiError as error:
        return _error_response(error)
    if authorization is not None:
        metadata.append(("authorization", authorization))
    request[state.CALL_METADATA] = tuple(metadata)
    return await handler(request)


@web.middleware
async def translate_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error raised before the response began into a Google-style JSON body."""
    try:
        return await handler(request)
    except ApiError as error:
        return _error_response(error)
    except grpc.aio.AioRpcError as error:
        return _error_response(ApiError.from_rpc_error(error, request.get(state.REQUEST_ID)))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = _error_response(_from_http(error))
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except Exception:
        _log.exception("unhandled error answering %s %s", request.method, request.path)
        return _error_response(
            ApiError.gateway(
                grpc.StatusCode.INTERNAL, Reason.GATEWAY_INTERNAL, "Internal gateway error."
            )
        )


def _from_http(error: web.HTTPException) -> ApiError:
    if error.status == 404:
        return ApiError.gateway(grpc.StatusCode.NOT_FOUND, Reason.ROUTE_NOT_FOUND, "No such route.")
    if error.status == 405:
        return ApiError.gateway(
            grpc.StatusCode.UNIMPLEMENTED,
            Reason.METHOD_NOT_ALLOWED,
            f"Method {error.method} is not allowed here."
            if isinstance(error, web.HTTPMethodNotAllowed)
            else error.reason,
            http_status=405,
        )
    if error.status == 413:
        return ApiError.invalid(Reason.MALFORMED_BODY, error.reason, {"body": error.reason})
    return ApiError.gateway(grpc.StatusCode.UNKNOWN, Reason.GATEWAY_INTERNAL, error.reason)


def _error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), status=error.http_status, headers=error.headers())


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer, streamed or not, names its request id."""
    request_id = request.get(state.REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
