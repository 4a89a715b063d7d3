"""scripts/sdk_request_costs.py sends real requests to the load tool's OpenAI stand-in, through
the `openai` SDK as the core does and through bare aiohttp, and prints CPU per request."""

from __future__ import annotations

import pytest

from tests.perf._scripts import refusal, run_and_median, run_script


@pytest.mark.parametrize(("flags", "label"), [((), "sdk"), (("--floor",), "aiohttp")])
def test_the_script_prints_cpu_per_request(flags: tuple[str, ...], label: str) -> None:
    printed = run_script("sdk_request_costs.py", "--requests", "20", "--runs", "2", *flags)
    run_and_median(printed, label, "µs/request", runs=2)


def test_a_count_below_one_is_refused_by_name() -> None:
    refused = refusal("sdk_request_costs.py", "--requests", "0")
    assert "--requests: must be at least 1, not 0" in refused
