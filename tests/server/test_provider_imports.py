"""A process loads only the SDKs its providers use, and a provider worker no story knowledge.

Each check runs in a fresh interpreter: this test process has imported everything.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("openai", "anthropic", "chromadb")


def _loaded_after(code: str) -> dict[str, bool]:
    """Which of HEAVY a fresh interpreter has imported after running `code`."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps({{name: name in sys.modules for name in {HEAVY!r}}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_a_provider_worker_loads_no_sdk_and_no_story_knowledge_until_configured() -> None:
    loaded = _loaded_after("import server.providers.worker_process, server.config")
    assert loaded == {"openai": False, "anthropic": False, "chromadb": False}


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ("synthetic", {"openai": False, "anthropic": False}),
        ("openai,synthetic", {"openai": True, "anthropic": False}),
        ("local", {"openai": True, "anthropic": False}),
        ("anthropic", {"openai": False, "anthropic": True}),
        ("anthropic,openai", {"openai": True, "anthropic": True}),
    ],
)
def test_building_providers_loads_the_sdks_the_chains_name(
    chain: str, expected: dict[str, bool]
) -> None:
    loaded = _loaded_after(
        f"""
        from server.config import SyntheticConfig, build_providers
        from server.providers.factory import build_providers as build_stages

        config = build_providers(
            plan_chain="synthetic",
            write_chain={chain!r},
            openai_api_key="k",
            anthropic_api_key="k",
            local_base_url="http://127.0.0.1:9/v1",
        )
        stages = build_stages(config, SyntheticConfig())
        assert [p.name for p in stages.write] == {chain.split(",")!r}
        """
    )
    assert {name: loaded[name] for name in expected} == expected


def test_a_failure_of_a_loaded_sdk_is_classified_without_the_other() -> None:
    loaded = _loaded_after(
        """
        import httpx2, openai
        from server.providers.errors import classify

        request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
        response = httpx2.Response(429, headers={"retry-after": "3"}, request=request)
        failure = classify("openai", openai.RateLimitError("slow", response=response, body=None))
        assert (failure.kind, failure.retry_after) == ("rate_limited", 3.0), failure
        assert classify("openai", openai.APITimeoutError(request=request)).kind == "timeout"
        assert classify("openai", RuntimeError("x")).kind == "connection"
        """
    )
    assert loaded["anthropic"] is False


def test_the_knowledge_packages_names_are_its_modules_names() -> None:
    import server.knowledge as knowledge

    assert set(knowledge._HOMES) == set(knowledge.__all__)
    for name in knowledge.__all__:
        home = importlib.import_module(f"server.knowledge.{knowledge._HOMES[name]}")
        assert getattr(knowledge, name) is getattr(home, name)
    assert set(knowledge.__all__) <= set(dir(knowledge))
    misspelt = "HashingEmbeder"  # mypy refuses `knowledge.HashingEmbeder` itself
    with pytest.raises(AttributeError, match="no attribute 'HashingEmbeder'"):
        getattr(knowledge, misspelt)
