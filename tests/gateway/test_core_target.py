"""Which gRPC targets name one core address (gateway/core_target.py)."""

from __future__ import annotations

import pytest

from gateway.core_target import names_one_address


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "10.0.0.7",
        "[::1]:50051",
        "::1",
        "dns:///127.0.0.1:50051",
        "dns://8.8.8.8/10.1.2.3:443",
        "dns:10.1.2.3:443",
        "ipv4:10.0.0.1:50051",
        "ipv6:[::1]:50051",
        "unix:/run/scriptgen/core.sock",
        "unix:///run/scriptgen/core.sock",
        "unix-abstract:scriptgen",
        "vsock:3:50051",
        "ipv4:10.0.0.1:50051,",  # gRPC skips the empty part
        "dns://8.8.8.8:53/10.0.0.1:1",
        "[fe80::1%eth0]:50051",
    ],
)
def test_one_address(target: str) -> None:
    assert names_one_address(target)


@pytest.mark.parametrize(
    "target",
    [
        "dns:///scriptgen-core-headless:50051",  # a headless Service: every ready core
        "scriptgen-core:50051",
        "localhost:50051",  # a name, whatever it resolves to here
        "dns://8.8.8.8/core.example.com:443",
        "ipv4:10.0.0.1:50051,10.0.0.2:50051",
        "ipv6:[::1]:50051,[::2]:50051",
        "unix:/run/a.sock,/run/b.sock",  # every sockaddr scheme lists addresses
        "unix-abstract:a,b",
        "vsock:3:50051,4:50051",
        "DNS:///10.0.0.1:50051",  # gRPC looks schemes up as written: not one it knows
        "unix:",
        "ipv4:",
        "[::1",
        "",
    ],
)
def test_maybe_several_addresses(target: str) -> None:
    assert not names_one_address(target)
