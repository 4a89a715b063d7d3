"""The OpenAI embedder through the real SDK against a wire-compatible stand-in; settings checks."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.errors import Unavailable
from server.knowledge import HashingEmbedder, OpenAIEmbedder, build_embedder
from server.knowledge.settings import (
    KnowledgeConfig,
    add_knowledge_arguments,
    knowledge_from_arguments,
)


@pytest.fixture
async def embeddings_api() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for POST /v1/embeddings that answers deterministic 1536-float vectors."""
    seen: list[dict[str, Any]] = []

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if body["input"] == ["fail"]:
            return web.json_response({"error": {"message": "boom"}}, status=400)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text))] + [0.0] * 1535}
            for i, text in reversed(list(enumerate(body["input"])))
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    async with TestServer(app) as server:
        yield str(server.make_url("/v1")), seen


async def test_openai_embeddings_in_order_and_batches(
    embeddings_api: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = embeddings_api
    embedder = OpenAIEmbedder(api_key="sk-test", model="text-embedding-3-small", base_url=url)
    try:
        texts = [f"text {'x' * i}" for i in range(300)]
        vectors = await embedder.embed(texts)
        assert [v[0] for v in vectors] == [float(len(t)) for t in texts], "answers reordered"
        assert [len(body["input"]) for body in seen] == [256, 44]
        assert seen[0]["model"] == "text-embedding-3-small"
        assert embedder.name == "openai-text-embedding-3-small" and embedder.dimension == 1536
        with pytest.raises(Unavailable) as raised:
            await embedder.embed(["fail"])
        assert raised.value.reason == "KNOWLEDGE_UNAVAILABLE"
    finally:
        await embedder.close()


def _config(*argv: str, **environ: str) -> KnowledgeConfig:
    parser = argparse.ArgumentParser()
    add_knowledge_arguments(parser, environ)
    parser.set_defaults(openai_api_key=environ.get("OPENAI_API_KEY", ""), openai_base_url="")
    return knowledge_from_arguments(parser.parse_args(argv))


def test_settings_from_flags_and_environment() -> None:
    assert _config() == KnowledgeConfig()
    config = _config(
        SCRIPTGEN_CHROMA_URL="http://chroma:8000",
        SCRIPTGEN_KNOWLEDGE_MAX_DOCUMENTS="7",
        SCRIPTGEN_EMBEDDER="openai",
        OPENAI_API_KEY="sk-test",
    )
    assert (config.chroma_url, config.max_documents, config.embedder) == (
        "http://chroma:8000",
        7,
        "openai",
    )
    assert "sk-test" not in repr(config)
    assert isinstance(build_embedder(_config()), HashingEmbedder)
    for argv, environ, message in [
        ((), {"SCRIPTGEN_CHROMA_URL": "chroma:8000"}, "http://host:8000"),
        (("--embedder", "openai"), {}, "OPENAI_API_KEY"),
        (
            ("--embedder", "openai", "--openai-embedding-model", "mine"),
            {"OPENAI_API_KEY": "k"},
            "SCRIPTGEN_OPENAI_EMBEDDING_DIMENSIONS",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            _config(*argv, **environ)
