"""The metrics of every gateway process sharing one port, whichever of them is scraped.

`scriptgen gateway --workers N` runs N processes on one port (SO_REUSEPORT), and a
scrape of `/metrics` is one connection, which the kernel hands to one of them. Read
from that process alone, a counter would go back and forth between the processes'
values from one scrape to the next. So the supervisor gives the workers a folder of
their own and a name each (`--worker-metrics-dir`, `--worker-name`): every worker
writes its exposition there every WRITE_SECONDS (to a temporary file, then renamed,
so a reader never sees half of one), and the worker that is scraped answers with
its own series as they are now and its siblings' as last written, each series
labelled `worker="<name>"`. Sum over `worker` for the host's figure.

A sibling's series are at most WRITE_SECONDS old, and every read of its file is at
least as new as the one before, so each series only grows from scrape to scrape as
its process's did. A file that cannot be read or parsed is left out of that scrape
and logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: How often a worker writes its exposition for its siblings, in seconds.
WRITE_SECONDS: Final = 2.0
#: The label every series carries in a merged exposition.
WORKER_LABEL: Final = "worker"
_SUFFIX: Final = ".prom"


class WorkerMetrics:
    """One worker's share: writes its registry for the others, answers for them all."""

    def __init__(
        self,
        registry: CollectorRegistry,
        directory: Path,
        name: str,
        *,
        write_seconds: float = WRITE_SECONDS,
    ) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a worker name must be a plain file name, not {name!r}")
        self._registry = registry
        self._directory = directory
        self._name = name
        self._write_seconds = write_seconds
        self._file = directory / f"{name}{_SUFFIX}"
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Write now, then every `write_seconds` on the running loop until `stop`."""
        self._write_and_schedule()

    def stop(self) -> None:
        """Stop writing and take this worker's file away (its process is ending)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._file.unlink(missing_ok=True)

    def _write_and_schedule(self) -> None:
        try:
            self.write()
        except OSError as error:
            log.warning("gateway worker metrics: could not write %s: %s", self._file, error)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._write_seconds, self._write_and_schedule)

    def write(self) -> None:
        """This worker's exposition, as it is now, for its siblings to read."""
        partial = self._directory / f".{self._name}{_SUFFIX}.tmp"
        partial.write_bytes(generate_latest(self._registry))
        os.replace(partial, self._file)

    def exposition(self) -> bytes:
        """Every worker's series, each labelled with its worker: this one's as they are now."""
        sources: list[tuple[str, str]] = [(self._name, generate_latest(self._registry).decode())]
        for path in sorted(self._directory.glob(f"*{_SUFFIX}")):
            name = path.name[: -len(_SUFFIX)]
            if name == self._name or name.startswith("."):
                continue
            try:
                sources.append((name, path.read_text()))
            except OSError as error:  # gone meanwhile: its worker ended
                log.warning("gateway worker metrics: could not read %s: %s", path, error)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merged(sources)))
        return generate_latest(registry)


def merged(sources: Iterable[tuple[str, str]]) -> list[Metric]:
    """The families of several expositions (worker name, text), every sample labelled with
    its worker; a family keeps the first source's help and type."""
    families: dict[str, Metric] = {}
    for worker, text in sources:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as error:
            log.warning("gateway worker metrics: worker %s's exposition: %s", worker, error)
            continue
        for family in parsed:
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
                for sample in family.samples
            )
    return list(families.values())


class _Merged(Collector):
    """Families already made, for `generate_latest`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
