"""What one plan stage's story-knowledge retrieval costs the core and a real Chroma.

    .venv/bin/python scripts/retrieval_costs.py [--episodes 140] [--runs 5] [--retrieves 20]
        [--other-projects 0] [--chroma-url http://127.0.0.1:8000 | --embedded]

Indexes `episodes` saved episodes of 12 chunks each (HashingEmbedder, 1024 dimensions)
into a throwaway `chroma run` (or, in a collection of its own, the server at
--chroma-url; with --embedded, embedded Chroma in this process, as a core runs it by
default), and as many into each of --other-projects other projects of the same
collection (every project's records share one collection, so Chroma's filters weigh
theirs too), then calls `ChromaKnowledgeBase.retrieve` at the plan stage's budget
with queries naming the story's people and places (so the keyword candidates are
full too). Each run is `retrieves` retrieves; per run it prints the CPU time of this
process per retrieve (the core's side: HTTP, JSON, scoring; embedded, Chroma's
work too), the wall time, the bytes of Chroma's response bodies per retrieve (none
embedded) and, for a server it started, that server's CPU time; then the median of
the runs. It uses only names of server.knowledge that earlier trees have too
(`ChromaKnowledgeBase`, `HashingEmbedder`, `split`, and `embedded_client` and
`server_client` of `server.knowledge.chroma`), so it measures another tree as well:

    PYTHONPATH=/tmp/other-tree .venv/bin/python scripts/retrieval_costs.py

Run it on a quiet machine: the figures are CPU times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from scriptgen.cli._args import at_least_one, not_negative
from scriptgen.loadtest._lifetime import interrupt_on_sigterm, parent_death_signal
from scriptgen.v1 import project_pb2

import server.knowledge
from server.jobs.story_context import ContextBudget
from server.knowledge import ChromaKnowledgeBase, HashingEmbedder, split
from server.knowledge.chroma import Connect, embedded_client, server_client

CHUNKS_PER_EPISODE = 12
PEOPLE = ["Minsu", "Dr. Han", "Jiwoo", "Nurse Park", "the stranger", "Captain Oh"]
PLACES = ["WARD", "ROOFTOP", "LOBBY", "PHARMACY", "PARKING LOT", "CHAPEL", "MORGUE"]
WORDS = [
    "pager", "night", "shift", "hospital", "rooftop", "lighthouse", "radio", "brother",
    "dawn", "smoke", "city", "rain", "monitor", "chart", "file", "blood", "elevator",
    "siren", "ambulance", "ferry", "island", "secret", "letter", "phone", "coffee",
    "stairs", "window", "corridor", "doctor", "nurse", "patient", "surgery", "fever",
    "silence", "promise",
]  # fmt: skip
QUERIES = [
    "Minsu on the hospital rooftop at night",
    "Dr. Han and the pager in the ward",
    "the stranger asks about Minsu's brother",
    "Jiwoo finds the letter in the chapel",
    "Captain Oh on the ferry to the island",
]
#: Bytes of HTTP response bodies this process has read (Chroma's HTTP client is httpx).
received = [0]


def _count_responses() -> None:
    send = httpx.Client.send

    def counting(client: httpx.Client, request: httpx.Request, **options: Any) -> httpx.Response:
        response = send(client, request, **options)
        received[0] += response.num_bytes_downloaded
        return response

    httpx.Client.send = counting  # type: ignore[method-assign,assignment]


def _script(rng: random.Random, number: int) -> str:
    """An episode that splits into CHUNKS_PER_EPISODE chunks."""
    scenes = []
    for scene in range(CHUNKS_PER_EPISODE):
        place = rng.choice(PLACES)
        lines = [f"INT. {place} - NIGHT {number}.{scene}"]
        for _ in range(9):
            who = rng.choice(PEOPLE)
            said = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14)))
            lines.append(f"{who.upper()}\n{said.capitalize()}.")
        scenes.append("\n\n".join(lines))
    return "\n\n".join(scenes) + "\n"


def _episode(rng: random.Random, number: int) -> project_pb2.Episode:
    return project_pb2.Episode(
        name=f"projects/bench/episodes/{number}",
        number=number,
        title=f"Night {number}",
        script=_script(rng, number),
        outline=f"{rng.choice(PEOPLE)} and {rng.choice(PEOPLE)} in the {rng.choice(PLACES)}.",
        cast=[person.upper() for person in rng.sample(PEOPLE, 3)],
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _chroma_server() -> Iterator[tuple[str, psutil.Process]]:
    """A throwaway `chroma run`: its URL and its process."""
    binary = Path(sys.executable).parent / "chroma"
    folder = tempfile.mkdtemp(prefix="retrieval-costs-")
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)  # however the rest ends
        port = _free_port()
        process = subprocess.Popen(
            [str(binary), "run", "--path", folder, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            preexec_fn=parent_death_signal(),
        )
        cleanup.callback(_end, process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("chroma run did not start")
            time.sleep(0.1)
        yield url, psutil.Process(process.pid)


def _end(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, 10 s to exit, then SIGKILL."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _measure(
    connect: Connect, chroma: psutil.Process | None, args: argparse.Namespace
) -> None:
    knowledge = ChromaKnowledgeBase(
        connect, HashingEmbedder(), collection_prefix=f"bench{secrets.token_hex(4)}"
    )
    await knowledge.open()
    try:
        rng = random.Random(11)
        started = time.perf_counter()
        for number in range(1, args.episodes + 1):
            episode = _episode(rng, number)
            assert len(split(episode.script, knowledge.chunk_tokens)) == CHUNKS_PER_EPISODE
            await knowledge.index_episode("bench", episode)
        others = [f"other{number}" for number in range(args.other_projects)]
        for project in others:
            for number in range(1, args.episodes + 1):
                await knowledge.index_episode(project, _episode(rng, number))
        print(
            f"server.knowledge from {Path(server.knowledge.__file__).parent}:"
            f" {args.episodes} episodes of {CHUNKS_PER_EPISODE} chunks indexed"
            f" in {1 + len(others)} projects in {time.perf_counter() - started:.0f} s"
        )
        budget = ContextBudget().knowledge_tokens
        queries = iter(QUERIES * (args.retrieves * (args.runs + 1)))
        for _ in range(3):  # connections, imports and caches warm
            await knowledge.retrieve("bench", next(queries), token_budget=budget)
        cpu_runs, wall_runs, byte_runs, chroma_runs = [], [], [], []
        for run in range(args.runs):
            chroma_cpu = sum(chroma.cpu_times()[:2]) if chroma else 0.0
            read, cpu, wall = received[0], time.process_time(), time.perf_counter()
            for _ in range(args.retrieves):
                passages = await knowledge.retrieve("bench", next(queries), token_budget=budget)
                assert passages
            cpu_runs.append((time.process_time() - cpu) / args.retrieves)
            wall_runs.append((time.perf_counter() - wall) / args.retrieves)
            byte_runs.append((received[0] - read) / args.retrieves)
            if chroma:
                chroma_runs.append((sum(chroma.cpu_times()[:2]) - chroma_cpu) / args.retrieves)
            print(
                f"run {run + 1}: core CPU {cpu_runs[-1] * 1000:7.1f} ms   wall"
                f" {wall_runs[-1] * 1000:7.1f} ms   received {byte_runs[-1] / 1e6:6.3f} MB"
                + (f"   chroma CPU {chroma_runs[-1] * 1000:7.1f} ms" if chroma else "")
                + "  per retrieve"
            )
        print(
            f"median of {args.runs} runs of {args.retrieves} retrieves: core CPU"
            f" {statistics.median(cpu_runs) * 1000:.1f} ms, wall"
            f" {statistics.median(wall_runs) * 1000:.1f} ms, received"
            f" {statistics.median(byte_runs) / 1e6:.3f} MB"
            + (f", chroma CPU {statistics.median(chroma_runs) * 1000:.1f} ms" if chroma else "")
            + " per retrieve"
        )
        for project in ["bench", *others]:
            await knowledge.delete_project(project)
    finally:
        await knowledge.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="retrieval_costs.py")
    parser.add_argument("--episodes", type=at_least_one, default=140)
    parser.add_argument("--runs", type=at_least_one, default=5)
    parser.add_argument("--retrieves", type=at_least_one, default=20)
    parser.add_argument("--other-projects", type=not_negative, default=0)
    parser.add_argument("--chroma-url", default="")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="embedded Chroma in a temporary folder, as a core without SCRIPTGEN_CHROMA_URL",
    )
    args = parser.parse_args()
    interrupt_on_sigterm()  # a `kill` removes the temporary folders too
    _count_responses()
    if args.embedded:
        with tempfile.TemporaryDirectory(prefix="retrieval-costs-") as folder:
            asyncio.run(_measure(embedded_client(Path(folder)), None, args))
        return
    if args.chroma_url:
        asyncio.run(_measure(server_client(args.chroma_url), None, args))
        return
    with _chroma_server() as (url, chroma):
        asyncio.run(_measure(server_client(url), chroma, args))


if __name__ == "__main__":
    main()
