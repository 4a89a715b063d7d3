"""The PNG chart of a run: latency distributions, throughput over time, server CPU and memory.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display), so it
works headless and leaves no global figure state behind. matplotlib is the
optional `loadtest` extra: `pip install 'scriptgen[loadtest]'`.
"""

from __future__ import annotations

from pathlib import Path

from scriptgen.loadtest._config import LoadTestError
from scriptgen.loadtest._report import LoadReport


def write_chart(report: LoadReport, path: Path) -> None:
    """Draw `report` into the PNG file `path`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise LoadTestError(
            "--chart needs matplotlib: pip install 'scriptgen[loadtest]'"
        ) from error

    figure = Figure(figsize=(13, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    config = report.config
    figure.suptitle(
        f"scriptgen loadtest — {config.streams} {config.protocol.value.upper()} streams,"
        f" {config.mode}, {report.started_utc}"
    )
    (cdf, itl), (flow, servers) = figure.subplots(2, 2)

    for name, label in (
        ("time_to_first_event", "time to first event"),
        ("time_to_first_token", "time to first token"),
    ):
        values = sorted(v * 1000 for v in report.samples.get(name, []))
        if values:
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            cdf.step(values, fractions, where="post", label=f"{label} (n={len(values)})")
    cdf.set_xlabel("ms after the request was sent")
    cdf.set_ylabel("fraction of streams")
    cdf.set_title("Time to first event / token (CDF)")
    cdf.grid(True, alpha=0.3)
    if cdf.get_legend_handles_labels()[0]:
        cdf.legend(loc="lower right")

    gaps = [v * 1000 for v in report.samples.get("inter_token_latency", [])]
    if gaps:
        itl.hist(gaps, bins=80, color="tab:purple", alpha=0.8)
        itl.set_yscale("log")
        for value, style in (
            (report.inter_token_latency.p50, "-"),
            (report.inter_token_latency.p95, "--"),
            (report.inter_token_latency.p99, ":"),
        ):
            itl.axvline(value * 1000, color="black", linestyle=style, linewidth=1)
    itl.set_xlabel("ms per token (lines: p50, p95, p99)")
    itl.set_ylabel("tokens")
    itl.set_title("Inter-token latency")
    itl.grid(True, alpha=0.3)

    times = [p.time for p in report.points]
    flow.plot(
        times, [p.tokens_per_second for p in report.points], color="tab:blue", label="tokens/s"
    )
    flow.set_xlabel("seconds since start")
    flow.set_ylabel("tokens/s delivered", color="tab:blue")
    flow.set_title("Throughput and open streams")
    flow.grid(True, alpha=0.3)
    opened = flow.twinx()
    opened.plot(times, [p.open_streams for p in report.points], color="tab:orange")
    opened.set_ylabel("open streams", color="tab:orange")

    memory = servers.twinx()
    for figures in report.process_figures():
        series = figures.get("samples") or []
        if not series:
            continue
        label = f"{figures['role']} {figures['pid']}"
        servers.plot([s[0] for s in series], [s[1] for s in series], label=f"{label} CPU %")
        memory.plot(
            [s[0] for s in series],
            [s[2] / (1024 * 1024) for s in series],
            linestyle="--",
            label=f"{label} RSS",
        )
    servers.set_xlabel("seconds since start")
    servers.set_ylabel("CPU % (solid)")
    memory.set_ylabel("RSS MiB (dashed)")
    servers.set_title("Server processes")
    servers.grid(True, alpha=0.3)
    if servers.get_legend_handles_labels()[0]:
        servers.legend(loc="upper left", fontsize="small")
    figure.savefig(path, format="png")
