"""GatewayConfig from flags and SCRIPTGEN_* variables."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from gateway import GatewayConfig, GatewayServer
from gateway.config import add_arguments, from_arguments


def _parse(argv: list[str], environ: dict[str, str]) -> GatewayConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ)
    return from_arguments(parser.parse_args(argv))


def test_defaults_without_flags_or_environment() -> None:
    config = _parse([], {})
    assert config == GatewayConfig()
    assert config.core_target == "127.0.0.1:50051"
    assert config.http_address == "127.0.0.1:8080"
    assert config.ping_interval_seconds == 15.0
    assert config.max_body_bytes == 1024 * 1024


def test_environment_sets_defaults_and_flags_win() -> None:
    environ = {
        "SCRIPTGEN_CORE_TARGET": "core:50051",
        "SCRIPTGEN_HTTP_ADDRESS": "0.0.0.0:9000",
        "SCRIPTGEN_SSE_RETRY_MS": "2500",
        "SCRIPTGEN_PING_INTERVAL_SECONDS": "3",
    }
    config = _parse(["--http-address", "127.0.0.1:0", "--max-body-bytes", "10"], environ)
    assert config.core_target == "core:50051"
    assert config.http_address == "127.0.0.1:0"
    assert config.sse_retry_ms == 2500
    assert config.ping_interval_seconds == 3.0
    assert config.max_body_bytes == 10


def test_flags_do_not_clash_with_the_cores() -> None:
    from server.config import add_arguments as add_core_arguments

    parser = argparse.ArgumentParser()
    add_core_arguments(parser, {})
    add_arguments(parser, {})  # argparse raises on a duplicate flag
    assert parser.parse_args([]).core_target == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("127.0.0.1:0", "127.0.0.1", 0), ("[::1]:8080", "::1", 8080), (":8080", "0.0.0.0", 8080)],
)
def test_http_address_splits_into_host_and_port(address: str, host: str, port: int) -> None:
    config = GatewayConfig(http_address=address)
    assert (config.http_host, config.http_port) == (host, port)


def test_public_api_is_exactly_what_the_cli_uses() -> None:
    import gateway

    assert sorted(gateway.__all__) == ["GatewayConfig", "GatewayServer", "create_app"]


def test_listen_backlog_is_bounded_and_named() -> None:
    assert _parse([], {}).listen_backlog == 1024
    assert _parse([], {"SCRIPTGEN_LISTEN_BACKLOG": "4096"}).listen_backlog == 4096
    for wrong in ("0", "65536"):
        with pytest.raises(ValueError, match=r"--listen-backlog must be 1\.\.65535"):
            _parse(["--listen-backlog", wrong], {})


async def test_the_http_listener_queues_the_configured_backlog() -> None:
    """A burst of new streams larger than the accept queue would wait for TCP's SYN retries.

    aiohttp's own default queue is 128 connections; `ss` shows a listener's queue size
    in its Send-Q column.
    """
    server = GatewayServer(
        GatewayConfig(core_target="127.0.0.1:1", http_address="127.0.0.1:0", listen_backlog=777)
    )
    await server.start()
    try:
        ss = await asyncio.create_subprocess_exec(
            "ss", "-ltnH", f"sport = :{server.port}", stdout=asyncio.subprocess.PIPE
        )
        output, _ = await ss.communicate()
        assert ss.returncode == 0
        shown = output.decode().split()
        assert shown[0] == "LISTEN"
        assert int(shown[2]) == 777
    finally:
        await server.stop()
