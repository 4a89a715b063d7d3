"""`make bench`'s scenarios and medians table."""

from __future__ import annotations

import shlex
from typing import Any

from scriptgen.cli import build_parser
from scriptgen.loadtest import LoadConfig, check_bounds
from scriptgen.loadtest.bench import SCENARIOS, medians


def test_every_scenario_is_a_valid_spawned_run() -> None:
    from scriptgen.cli import loadtest

    for name, arguments in SCENARIOS.items():
        args = build_parser({}).parse_args(["loadtest", *shlex.split(arguments)])
        config = loadtest._config(args)
        assert isinstance(config, LoadConfig), name
        assert config.spawn, name
        check_bounds(config)


def test_medians_read_nested_figures_and_skip_missing_ones() -> None:
    runs: list[dict[str, Any]] = [
        {"outcomes": {"completed": 10}, "latency_ms": {"time_to_first_event": {"p50": 5.0}}},
        {"outcomes": {"completed": 8}, "latency_ms": {"time_to_first_event": {"p50": 7.0}}},
        {"outcomes": {"completed": 9}, "errors": {"http 503": 1}},
    ]
    table = medians(runs)
    assert table["completed"] == (9.0, 8.0, 10.0)
    assert table["TTFE p50 ms"] == (6.0, 5.0, 7.0)
    assert table["errors"] == (0.0, 0.0, 1.0)
    assert "core CPU s" not in table
