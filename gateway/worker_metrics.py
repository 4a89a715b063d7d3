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

A sibling's series are at most WRITE_SECONDS old. The worker that answers a scrape
writes its file with what it serves before it answers, so every later read of that
file is at least as new: a counter or a histogram never goes back from one scrape
to the next, whichever worker answers. A file that cannot be read or parsed is left
out of that scrape and logged. The writes and the scrape's work (parsing the siblings'
files, a few milliseconds each) run on a thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
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
#: What a worker's name may be: a file name in the folder and a label value.
WORKER_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What a worker's file in the shared folder ends with.
SUFFIX: Final = ".prom"


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
        if not WORKER_NAME.fullmatch(name):
            raise ValueError(f"a worker name must be a plain file name, not {name!r}")
        self._registry = registry
        self._directory = directory
        self._name = name
        self._write_seconds = write_seconds
        self._file = directory / f"{name}{SUFFIX}"
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Write now, then every `write_seconds` on the running loop until `stop`."""
        self._write_and_schedule()

    def stop(self) -> None:
        """Stop writing and take this worker's file away (its process is ending)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._lock:  # a write on a thread now finds it stopped
            self._stopped = True
            self._file.unlink(missing_ok=True)

    def _write_and_schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._write_seconds, self._write_and_schedule)
        loop.run_in_executor(None, self._write_logged)

    def _write_logged(self) -> None:
        try:
            self.write()
        except Exception as error:  # the next write tries again
            log.warning("gateway worker metrics: could not write %s: %s", self._file, error)

    def write(self) -> bytes:
        """This worker's exposition as it is now, written for its siblings to read. Made and
        written under one lock, so the file never goes back to an older one."""
        with self._lock:
            exposition = generate_latest(self._registry)
            if not self._stopped:
                partial = self._directory / f".{self._name}{SUFFIX}.tmp"
                partial.write_bytes(exposition)
                os.replace(partial, self._file)
        return exposition

    async def scrape(self) -> bytes:
        """`exposition()`, on a thread."""
        return await asyncio.to_thread(self.exposition)

    def exposition(self) -> bytes:
        """Every worker's series, each labelled with its worker: this one's as they are now,
        written for the others first (so that none of them ever serves older ones)."""
        try:
            own = self.write()
        except OSError as error:
            log.warning("gateway worker metrics: could not write %s: %s", self._file, error)
            own = generate_latest(self._registry)
        sources: list[tuple[str, str]] = [(self._name, own.decode())]
        for path in sorted(self._directory.glob(f"*{SUFFIX}")):
            name = path.name[: -len(SUFFIX)]
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
        except Exception as error:  # not an exposition: left out, whatever the parser raised
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
