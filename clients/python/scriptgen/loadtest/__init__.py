"""The load tool: many concurrent generations against a local Scriptgen, measured.

    config = LoadConfig(target=parse_http_target("http://127.0.0.1:8080"), ...)
    report = await run_load(config)
    print(summary(report)); report.write_json(path); write_chart(report, png)

Streams go through the gateway as SSE or straight to the core over gRPC; they
start all at once (burst), evenly over a period (ramp), or are held open
idle (hold) to measure memory per idle stream. The tool measures time to
first event and first token, inter-token latency, tokens per second, errors
by kind, and the CPU and memory of every server process. It only runs
against loopback and is bounded in streams and time. `scriptgen loadtest
--help` is its command line; BENCHMARKS.md has the documented scenarios.
"""

from scriptgen.loadtest._chart import write_chart
from scriptgen.loadtest._config import (
    MAX_DURATION_SECONDS,
    MAX_STREAMS,
    LoadConfig,
    LoadTestError,
    ModelProvider,
    Protocol,
    SyntheticPace,
    Target,
    auto_workers,
    check_bounds,
    check_loopback,
    parse_grpc_target,
    parse_http_target,
)
from scriptgen.loadtest._report import LoadReport, summary
from scriptgen.loadtest._runner import run_load
from scriptgen.loadtest._tokens import count_tokens

__all__ = [
    "MAX_DURATION_SECONDS",
    "MAX_STREAMS",
    "LoadConfig",
    "LoadReport",
    "LoadTestError",
    "ModelProvider",
    "Protocol",
    "SyntheticPace",
    "Target",
    "auto_workers",
    "check_bounds",
    "check_loopback",
    "count_tokens",
    "parse_grpc_target",
    "parse_http_target",
    "run_load",
    "summary",
    "write_chart",
]
