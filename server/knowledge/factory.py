"""`build_knowledge_base`: embedded Chroma in the data dir, or the Chroma server configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scriptgen.v1 import project_pb2

from server.errors import NotFound
from server.knowledge.base import KnowledgeStore
from server.knowledge.chroma import embedded_client, server_client
from server.knowledge.embedders import build_embedder
from server.knowledge.store import ChromaKnowledgeBase, Owners, Saved
from server.knowledge.write_batch import (
    EMBEDDED_BATCH_RECORDS,
    EMBEDDED_REST_SHARE,
    MAX_BATCH_RECORDS,
)

if TYPE_CHECKING:
    # Only for typing: server.config imports this package's settings.
    from server.config import CoreConfig
    from server.store.base import ProjectStore

#: Folder of embedded Chroma inside the data dir.
CHROMA_DIRECTORY = "chroma"


def saved_episodes(store: ProjectStore) -> Saved:
    """A tenant's episode as `store` has it now (None: not saved)."""

    async def saved(tenant: str, project_id: str, number: int) -> project_pb2.Episode | None:
        try:
            return await store.get_episode(project_id, number, tenant=tenant)
        except NotFound:
            return None

    return saved


def build_knowledge_base(
    config: CoreConfig, owners: Owners | None = None, saved: Saved | None = None
) -> KnowledgeStore:
    """The story knowledge of a core: `SCRIPTGEN_CHROMA_URL`'s server, else embedded Chroma.

    `owners` (the project store's `first_owner`) gives records written before
    they carried a tenant to the tenant of their project; `saved`
    (`saved_episodes` of the project store) tells an indexing retry whether its
    episode is still saved.
    """
    settings = config.knowledge
    if settings.chroma_url:
        connect = server_client(settings.chroma_url)
        where = f"the Chroma server at {settings.chroma_url}"
    else:
        connect = embedded_client(config.data_dir / CHROMA_DIRECTORY)
        where = "embedded Chroma"
    return ChromaKnowledgeBase(
        connect,
        build_embedder(settings),
        collection_prefix=settings.collection_prefix,
        max_documents=settings.max_documents,
        chunk_tokens=settings.chunk_tokens,
        timeout_seconds=settings.timeout_seconds,
        where=where,
        start_without_chroma=bool(settings.chroma_url),
        owners=owners,
        saved=saved,
        # Embedded Chroma lives in this core's data dir: nothing else writes to it.
        sole_writer=not settings.chroma_url,
        # Embedded Chroma's writes hold the GIL: smaller batches, shorter stalls of the loop,
        # and a rest after each write.
        batch_records=MAX_BATCH_RECORDS if settings.chroma_url else EMBEDDED_BATCH_RECORDS,
        batch_rest_share=0.0 if settings.chroma_url else EMBEDDED_REST_SHARE,
    )
