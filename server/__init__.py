"""The Scriptgen core: projects, episodes and generation jobs behind a grpc.aio server.

`Core`, `CoreConfig` and `SyntheticConfig` load on first use, so a process that
needs only a small part of the package (the gateway's logging, the CLI) does not
import the core's provider SDKs and ChromaDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.app import Core
    from server.config import CoreConfig, SyntheticConfig

__all__ = ["Core", "CoreConfig", "SyntheticConfig"]

_HOMES = {"Core": "server.app", "CoreConfig": "server.config", "SyntheticConfig": "server.config"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'server' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
