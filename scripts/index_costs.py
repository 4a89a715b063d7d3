"""What indexing saved episodes costs when many finish at once, on embedded Chroma, in-process.

    .venv/bin/python scripts/index_costs.py [--episodes 200] [--tokens 640] [--runs 3]
    .venv/bin/python scripts/index_costs.py --max-records 6    # one episode per write
    .venv/bin/python scripts/index_costs.py --max-records 256 --rest-share 0  # a server's
    .venv/bin/python scripts/index_costs.py --existing 700   # into a collection with history

`episodes` episodes of ~`tokens` load-tool tokens (the OpenAI stand-in's
screenplay) are indexed at once into 10 projects of a fresh embedded Chroma,
as the pipeline's index stage does (`ChromaKnowledgeBase.index_episode`).
Prints, per run, this process's CPU per episode (all threads: the embedder's
and Chroma's too), the wall time until the last one was written and the
number of Chroma writes; then the medians. `--max-records` caps the records a
write may hold (`server.knowledge.write_batch`; an episode of 640 tokens
makes 6): the default is what a core gives embedded Chroma, and 6 writes each
episode alone, as before batching. `--rest-share` is the writer's rest after
each write, as a share of the write's time (a core's embedded default; 0: none).
`--existing` episodes are indexed first (not measured), into 5 other projects: a
write's read and delete of what its sources hold are weighed against the whole
collection. Run it on a quiet machine: every figure is CPU or wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import uvloop
from scriptgen.cli._args import at_least_one, not_negative
from scriptgen.loadtest._lifetime import interrupt_on_sigterm
from scriptgen.loadtest._standin import screenplay
from scriptgen.v1 import project_pb2

from server.knowledge import ChromaKnowledgeBase, HashingEmbedder
from server.knowledge.chroma import embedded_client
from server.knowledge.write_batch import EMBEDDED_BATCH_RECORDS, EMBEDDED_REST_SHARE


async def _run(
    episodes: int, tokens: int, max_records: int, rest_share: float, existing: int = 0
) -> tuple[float, float, int]:
    script = "".join(screenplay(tokens))
    with tempfile.TemporaryDirectory(prefix="index-costs-") as folder:
        knowledge = ChromaKnowledgeBase(
            embedded_client(Path(folder) / "chroma"),
            HashingEmbedder(),
            sole_writer=True,
            batch_records=max_records,
            batch_rest_share=rest_share,
        )
        await knowledge.open()
        try:
            await knowledge.index_episode("warm-up", project_pb2.Episode(number=1, script=script))
            await asyncio.gather(
                *(
                    knowledge.index_episode(
                        f"history-{n % 5}",
                        project_pb2.Episode(number=n // 5 + 1, title=f"Earlier {n}", script=script),
                    )
                    for n in range(existing)
                )
            )
            writes = knowledge._episodes.writes
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(
                *(
                    knowledge.index_episode(
                        f"project-{n % 10}",
                        project_pb2.Episode(number=n + 1, title=f"Episode {n}", script=script),
                    )
                    for n in range(episodes)
                )
            )
            spent, took = time.process_time() - cpu, time.perf_counter() - wall
            return spent / episodes, took, knowledge._episodes.writes - writes
        finally:
            await knowledge.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="index_costs.py")
    parser.add_argument("--episodes", type=at_least_one, default=200)
    parser.add_argument("--tokens", type=at_least_one, default=640)
    parser.add_argument("--runs", type=at_least_one, default=3)
    parser.add_argument("--max-records", type=at_least_one, default=EMBEDDED_BATCH_RECORDS)
    parser.add_argument("--rest-share", type=float, default=EMBEDDED_REST_SHARE)
    parser.add_argument("--existing", type=not_negative, default=0)
    args = parser.parse_args()
    interrupt_on_sigterm()  # a `kill` removes the temporary folders too
    if args.rest_share < 0:
        parser.error(f"--rest-share must be at least 0, not {args.rest_share}")
    results = []
    for run in range(args.runs):
        cpu, wall, writes = uvloop.run(
            _run(args.episodes, args.tokens, args.max_records, args.rest_share, args.existing)
        )
        results.append((cpu, wall))
        print(
            f"run {run + 1}: {cpu * 1000:.2f} ms CPU per episode, all written in {wall:.2f} s,"
            f" {writes} Chroma writes"
        )
    print(
        f"median of {args.runs}: {statistics.median(c for c, _ in results) * 1000:.2f} ms CPU"
        f" per episode, {statistics.median(w for _, w in results):.2f} s"
        f" ({args.episodes} episodes, at most {args.max_records} records a write,"
        f" rest share {args.rest_share}, {args.existing} existing)"
    )


if __name__ == "__main__":
    main()
