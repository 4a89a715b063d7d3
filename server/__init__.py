"""The Scriptgen core: projects, episodes and generation jobs behind a grpc.aio server."""

from server.app import Core
from server.config import CoreConfig, SyntheticConfig

__all__ = ["Core", "CoreConfig", "SyntheticConfig"]
