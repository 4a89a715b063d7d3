"""ClientConfig.tls: the SDK talks to a real grpc.aio server on port 0 serving TLS with a
self-signed certificate made for the test (openssl), and the API key rides along once."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from scriptgen import Client, ClientConfig, RetryPolicy, UnavailableError
from scriptgen.v1 import generation_pb2, generation_service_pb2, generation_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
ONE_TRY = RetryPolicy(max_attempts=1)


class EchoGenerations(generation_service_pb2_grpc.GenerationServiceServicer):
    """GetGeneration answers the name asked for and keeps the `authorization` values it got."""

    def __init__(self) -> None:
        self.authorizations: list[list[str]] = []

    async def GetGeneration(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GetGenerationRequest, context: Context
    ) -> generation_service_pb2.GetGenerationResponse:
        metadata = context.invocation_metadata() or ()
        self.authorizations.append([str(v) for k, v in metadata if k == "authorization"])
        return generation_service_pb2.GetGenerationResponse(
            generation=generation_pb2.Generation(name=request.name, title="Over TLS")
        )

    async def GenerateScript(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.GenerateScriptRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.GenerateScriptResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")
        yield generation_service_pb2.GenerateScriptResponse()

    async def StreamGenerationEvents(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.StreamGenerationEventsRequest, context: Context
    ) -> AsyncIterator[generation_service_pb2.StreamGenerationEventsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")
        yield generation_service_pb2.StreamGenerationEventsResponse()

    async def ListGenerations(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.ListGenerationsRequest, context: Context
    ) -> generation_service_pb2.ListGenerationsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    async def CancelGeneration(  # noqa: N802 - gRPC names servicer methods after RPCs
        self, request: generation_service_pb2.CancelGenerationRequest, context: Context
    ) -> generation_service_pb2.CancelGenerationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")


def _self_signed(folder: Path) -> tuple[bytes, bytes]:
    """(private key, certificate) in PEM for 127.0.0.1 and localhost, valid for a day."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl makes the test certificate"
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[EchoGenerations, str, bytes]]:
    """The servicer, its host:port and the certificate its clients must trust."""
    key, cert = _self_signed(tmp_path)
    servicer = EchoGenerations()
    server = grpc.aio.server()
    generation_service_pb2_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}", cert
    finally:
        await server.stop(None)


async def test_a_tls_client_trusting_the_certificate_gets_through(
    tls_server: tuple[EchoGenerations, str, bytes],
) -> None:
    servicer, target, cert = tls_server
    config = ClientConfig(tls=True, root_certificates=cert, api_key="sg_over_tls")
    async with Client(target, config) as client:
        job = await client.get_generation("generations/g1")
    assert job.name == "generations/g1"
    assert job.title == "Over TLS"
    assert servicer.authorizations == [["Bearer sg_over_tls"]]


async def test_plaintext_and_untrusted_clients_do_not_get_through(
    tls_server: tuple[EchoGenerations, str, bytes],
) -> None:
    servicer, target, _ = tls_server
    for config in (
        ClientConfig(retry=ONE_TRY, deadline=3.0),  # plaintext to a TLS port
        ClientConfig(retry=ONE_TRY, deadline=3.0, tls=True),  # the system's roots
    ):
        async with Client(target, config) as client:
            with pytest.raises(UnavailableError):
                await client.get_generation("generations/g1")
    assert servicer.authorizations == []
