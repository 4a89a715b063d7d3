"""What a client learns when the core is down: a generic message, never our network's text.

gRPC's own text for an unreachable core names addresses and socket errors
("connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:…:
Connection refused"); the gateway answers a generic message instead and logs
the original at WARNING with the request id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from gateway import GatewayServer
from tests.gateway.conftest import gateway_config
from tests.security.conftest import unused_port

GENERIC = "The service is unavailable; retry later."


async def test_a_dead_core_is_a_generic_503_and_a_warning_with_the_request_id(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    port = unused_port()
    gateway = GatewayServer(gateway_config(f"127.0.0.1:{port}"))
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=30.0
        ) as http:
            listed = await http.get("/v1/projects", headers={"X-Request-Id": "req-dead-1"})
            streamed = await http.post(
                "/v1/projects/p1/generations",
                json={"title": "Pilot"},
                headers={"X-Request-Id": "req-dead-2", "Accept": "text/event-stream"},
            )
    finally:
        await gateway.stop()

    for answer in (listed, streamed):
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert (error["status"], error["message"]) == ("UNAVAILABLE", GENERIC)
        assert [d["reason"] for d in error["details"]] == ["CORE_CALL_FAILED"]
        for leak in ("127.0.0.1", str(port), "refused", "backends", "ipv4", "UNKNOWN"):
            assert leak not in answer.text, leak

    warnings = [
        line
        for line in log_lines()
        if line["level"] == "WARNING" and line["logger"] == "gateway.errors"
    ]
    by_request = {line.get("request_id"): line["message"] for line in warnings}
    assert set(by_request) >= {"req-dead-1", "req-dead-2"}
    for message in by_request.values():
        assert "UNAVAILABLE" in message and f"127.0.0.1:{port}" in message


async def test_errors_of_the_core_keep_their_own_message(
    http: httpx.AsyncClient, alice_key: str
) -> None:
    missing = await http.get(
        "/v1/projects/nowhere", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["details"][0]["reason"] == "PROJECT_NOT_FOUND"
    assert "nowhere" in error["message"]
