"""The one gRPC→HTTP status mapping and the decoding of the core's rich errors."""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import ApiError, Reason, http_status

EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_every_grpc_code_has_its_http_status(code: grpc.StatusCode) -> None:
    assert http_status(code) == EXPECTED[code.name]


def _packed(*messages: object) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        detail = any_pb2.Any()
        detail.Pack(message)  # type: ignore[arg-type]
        packed.append(detail)
    return packed


def _rpc_error(code: grpc.StatusCode, message: str, *details: object) -> grpc.aio.AioRpcError:
    status = status_pb2.Status(code=code.value[0], message=message, details=_packed(*details))
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=message)


def test_rich_details_become_the_json_body() -> None:
    info = error_details_pb2.ErrorInfo(reason="PROJECT_NOT_FOUND", domain="scriptgen.dev")
    resource = error_details_pb2.ResourceInfo(resource_type="Project", resource_name="projects/x")
    error = ApiError.from_rpc_error(
        _rpc_error(grpc.StatusCode.NOT_FOUND, "no such project", info, resource)
    )
    body = error.body()["error"]
    assert error.http_status == 404
    assert body["code"] == 404
    assert body["status"] == "NOT_FOUND"
    assert body["message"] == "no such project"
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "PROJECT_NOT_FOUND",
        "domain": "scriptgen.dev",
    }
    assert body["details"][1]["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"
    assert body["details"][1]["resourceName"] == "projects/x"
    assert error.headers() == {}


def test_resource_exhausted_says_when_to_retry() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=1))
    info = error_details_pb2.ErrorInfo(reason="TOO_MANY_JOBS", domain="scriptgen.dev")
    with_info = ApiError.from_rpc_error(
        _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many jobs", info, retry)
    )
    assert with_info.http_status == 429
    assert with_info.headers() == {"Retry-After": "3"}
    without = ApiError.from_rpc_error(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"))
    assert without.headers() == {"Retry-After": "1"}


def test_an_error_from_outside_the_core_error_tree_gets_a_generic_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.7:50051:"
        " Failed to connect to remote host: Connection refused"
    )
    bare = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details=transport
    )
    with caplog.at_level(logging.WARNING, logger="gateway.errors"):
        error = ApiError.from_rpc_error(bare, "req-7")
    assert (error.http_status, error.message) == (503, "The service is unavailable; retry later.")
    assert [d["reason"] for d in error.details_json()] == ["CORE_CALL_FAILED"]
    (record,) = caplog.records
    assert transport in record.getMessage() and getattr(record, "request_id", "") == "req-7"
    # Details of another domain do not make a status the core's either.
    foreign = error_details_pb2.ErrorInfo(reason="UPSTREAM", domain="proxy.example")
    proxied = ApiError.from_rpc_error(_rpc_error(grpc.StatusCode.INTERNAL, "10.0.3.7", foreign))
    assert proxied.message == "Internal error."
    assert [d["reason"] for d in proxied.details_json()] == ["CORE_CALL_FAILED"]


def test_details_for_another_code_are_not_trusted() -> None:
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="x")
    status.details.extend(_packed(error_details_pb2.ErrorInfo(reason="X", domain="scriptgen.dev")))
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    error = ApiError.from_rpc_error(
        grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), trailers, "boom")
    )
    assert [d["reason"] for d in error.details_json()] == ["CORE_CALL_FAILED"]
    assert error.message == "Internal error."


def test_unknown_detail_types_still_reach_the_client() -> None:
    detail = any_pb2.Any(type_url="type.googleapis.com/acme.Unknown", value=b"\x08\x01")
    error = ApiError(grpc.StatusCode.INTERNAL, "x", [detail])
    assert error.body()["error"]["details"] == [
        {"@type": "type.googleapis.com/acme.Unknown", "value": "CAE="}
    ]


def test_gateway_violations_name_each_field() -> None:
    error = ApiError.invalid(Reason.INVALID_FIELD, "bad", {"project.title": "Must be a string."})
    details = error.body()["error"]["details"]
    assert details[0]["reason"] == "INVALID_FIELD"
    assert details[0]["domain"] == "scriptgen.dev"
    assert details[1]["fieldViolations"] == [
        {"field": "project.title", "description": "Must be a string."}
    ]
