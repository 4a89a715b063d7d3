"""The HTTP/SSE gateway: JSON REST and Server-Sent Events over the Scriptgen gRPC core."""

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.server import GatewayServer

__all__ = ["GatewayConfig", "GatewayServer", "create_app"]
