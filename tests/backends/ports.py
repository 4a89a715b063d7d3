"""A free TCP port for a server a test starts itself (Redis, PostgreSQL, Chroma)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on right now (another process may take it before the
    server binds it: the starters that use it wait for the server to answer)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
