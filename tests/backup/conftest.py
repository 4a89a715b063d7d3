"""A data dir filled by a real core (projects, episodes, story knowledge), then stopped."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from server import Core, CoreConfig
from server.backup import Stores
from tests.backends.chroma import chroma_prefix, chroma_url  # noqa: F401
from tests.backup.stories import holdings, populate
from tests.conftest import fast_core_config


@dataclass(frozen=True)
class Filled:
    """A stopped core's config and what it held when it stopped."""

    config: CoreConfig
    holdings: dict[str, Any]

    @property
    def stores(self) -> Stores:
        return Stores.from_config(self.config)

    def elsewhere(self, data_dir: Path) -> CoreConfig:
        """The same config with another data dir (where a restore goes)."""
        return replace(self.config, data_dir=data_dir)


@pytest.fixture
async def filled(tmp_path: Path) -> Filled:
    config = fast_core_config(tmp_path / "live")
    core = Core(config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        await populate(target)
        held = await holdings(target)
    finally:
        await core.stop()
    return Filled(config, held)
