"""Several gateway processes on one port answer `/metrics` for all of them (gateway.worker_metrics).

The first test runs the real supervisor, `scriptgen gateway --workers 2`, and scrapes it
over new connections, which the kernel hands to either worker; the others check the
sharing itself on real registries in a temporary folder.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from scriptgen.cli import main

from gateway.metrics import GatewayMetrics
from gateway.worker_metrics import WRITE_SECONDS, WorkerMetrics
from tests.deploy.tools import promtool, run
from tests.replicas.cluster import GATEWAY_LINE, spawn

HEALTH_CHECKS = 40


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _by_worker(samples: Iterable[tuple[dict[str, str], float]]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for labels, value in samples:
        counts[labels["worker"]] = counts.get(labels["worker"], 0.0) + value
    return counts


async def _both_workers_up(http: httpx.AsyncClient) -> None:
    """Return once a scrape shows both workers (the supervisor waits for one only)."""
    async with asyncio.timeout(30):
        while True:
            text = (await http.get("/metrics")).text
            if set(_by_worker(_samples(text, "scriptgen_event_loop_lag_seconds_count"))) == {
                "1",
                "2",
            }:
                return
            await asyncio.sleep(0.2)


def _metrics_dir(pid: int) -> Path:
    """The shared metrics folder a worker was started with."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    flag = b"--worker-metrics-dir="
    return Path(next(a for a in arguments if a.startswith(flag))[len(flag) :].decode())


async def test_a_scrape_of_any_worker_holds_every_workers_series_by_worker() -> None:
    gateway = await spawn(
        "gateway",
        "--workers=2",
        "--core-target=127.0.0.1:1",  # no core: /healthz and /metrics answer without one
        "--http-address=127.0.0.1:0",
        "--drain-seconds=0.5",
        pattern=GATEWAY_LINE,
    )
    base = gateway.address.rstrip("/")
    # A connection per request, so the kernel spreads them over both workers.
    fresh = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=base, limits=fresh, timeout=10) as http:
            await _both_workers_up(http)  # the supervisor's lines have been printed by then
            workers = next(line for line in gateway.output if "pids" in line)
            shared = _metrics_dir(int(workers.split("pids")[1].strip(" ()\n").split()[0]))
            for _ in range(HEALTH_CHECKS):
                assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(WRITE_SECONDS + 0.5)  # every worker has written since
            texts = [(await http.get("/metrics")).text for _ in range(8)]
        assert sorted(path.name for path in shared.iterdir()) == ["1.prom", "2.prom"]
    finally:
        assert await gateway.stop() == 0, gateway.output
    assert not shared.exists(), "the supervisor takes the folder away"
    totals = []
    for text in texts:
        lag = _by_worker(_samples(text, "scriptgen_event_loop_lag_seconds_count"))
        assert set(lag) == {"1", "2"}, "each scrape holds both workers' series"
        health = _by_worker(
            (labels, value)
            for labels, value in _samples(text, "scriptgen_http_requests_total")
            if labels["route"] == "/healthz"
        )
        assert set(health) == {"1", "2"} and all(health.values()), "both answered some"
        totals.append(sum(health.values()))
    # Ours, and the supervisor's probe that found the first worker listening.
    assert totals[0] > HEALTH_CHECKS and set(totals) == {totals[0]}, totals
    checked = run([promtool(), "check", "metrics"], stdin=texts[-1])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_worker_answers_with_its_own_series_now_and_the_others_as_written(
    tmp_path: Path,
) -> None:
    first, second = GatewayMetrics.create(), GatewayMetrics.create()
    one = WorkerMetrics(first.registry, tmp_path, "1")
    two = WorkerMetrics(second.registry, tmp_path, "2")
    one.write()  # as `start` does, before any request
    two.write()
    try:
        first.requests.labels(route="/a", method="GET", status="200").inc(3)
        second.requests.labels(route="/a", method="GET", status="200").inc(5)
        # Worker 2's increment is not written yet: worker 1 reads its last file.
        seen = _by_worker(_samples(one.exposition().decode(), "scriptgen_http_requests_total"))
        assert seen == {"1": 3.0}, "2's file is from its start, before any request"
        two.write()
        seen = _by_worker(_samples(one.exposition().decode(), "scriptgen_http_requests_total"))
        assert seen == {"1": 3.0, "2": 5.0}
        # Worker 1 wrote what it served: whichever answers next shows no older figure.
        first.requests.labels(route="/a", method="GET", status="200").inc()  # not written yet
        seen = _by_worker(_samples(two.exposition().decode(), "scriptgen_http_requests_total"))
        assert seen == {"1": 3.0, "2": 5.0}
    finally:
        one.stop()
        two.stop()
    assert not list(tmp_path.iterdir()), "a stopped worker takes its file away"


def test_a_file_that_is_not_an_exposition_is_left_out(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    counter = Counter("scriptgen_things", "Things.", registry=registry)
    counter.inc()
    (tmp_path / "broken.prom").write_text("this is { not an exposition\n")
    worker = WorkerMetrics(registry, tmp_path, "1")
    text = worker.exposition().decode()
    assert _samples(text, "scriptgen_things_total") == [({"worker": "1"}, 1.0)]


@pytest.mark.parametrize("name", ["", "../up", ".hidden"])
def test_a_worker_name_must_be_a_plain_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        WorkerMetrics(CollectorRegistry(), tmp_path, name)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--worker-name=1"], "--worker-metrics-dir and --worker-name go together"),
        (["--worker-metrics-dir=/tmp/x"], "--worker-metrics-dir and --worker-name go together"),
        (["--worker-metrics-dir=/tmp/x", "--worker-name=../a"], "letters, digits"),
        (["--worker-metrics-dir=/tmp/x", "--worker-name=a", "--workers=2"], "one worker"),
        (["--worker-metrics-dir=/nonexistent/scriptgen", "--worker-name=a"], "is not a folder"),
    ],
)
def test_the_worker_flags_are_checked_before_anything_starts(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["gateway", "--http-address=127.0.0.1:0", *flags])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("scriptgen: error: invalid configuration: ") and message in err, err
