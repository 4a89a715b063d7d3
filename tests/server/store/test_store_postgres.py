"""What only the PostgreSQL store promises: it says when the database is out of reach."""

from __future__ import annotations

import asyncpg
import pytest

from server.errors import Unavailable
from server.store import PostgresProjectStore
from server.store.postgres import redact
from tests.backends.ports import free_port
from tests.backends.postgres import fresh_database


async def test_an_unreachable_database_is_unavailable_at_open() -> None:
    url = f"postgresql://scriptgen:secret@127.0.0.1:{free_port()}/scriptgen"
    store = PostgresProjectStore(url, timeout_seconds=2.0)
    with pytest.raises(Unavailable) as raised:
        await store.open()
    assert raised.value.reason == "STORE_UNAVAILABLE"
    assert "secret" not in raised.value.message and "127.0.0.1" in raised.value.message


async def test_losing_the_database_turns_ping_unavailable(postgres_url: str) -> None:
    async with fresh_database(postgres_url) as url:
        store = PostgresProjectStore(url, timeout_seconds=2.0)
        await store.open()
        try:
            await store.ping()
            admin = await asyncpg.connect(postgres_url)
            try:
                # Cut every connection of the pool and make reconnecting fail.
                name = url.rpartition("/")[2]
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await admin.close()
            with pytest.raises(Unavailable) as raised:
                await store.ping()
            assert raised.value.reason == "STORE_UNAVAILABLE"
        finally:
            await store.close()


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
