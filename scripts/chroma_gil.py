"""Does embedded Chroma hold the GIL while it writes? (RELIABILITY.md, Known gap 9)

    .venv/bin/python scripts/chroma_gil.py [--rounds 30]

Upserts an episode's worth of records (12 x 1024 dimensions, as the story knowledge
indexes one) into a throwaway `PersistentClient` while another Python thread counts
how often it gets to run. If the upserts released the GIL, that thread would tick as
often as when idle; the ratio shows how much of each upsert the event loop would lose.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from collections.abc import Sequence

import chromadb
from scriptgen.loadtest._lifetime import interrupt_on_sigterm

RECORDS = 12
DIMENSION = 1024


def main() -> None:
    parser = argparse.ArgumentParser(prog="chroma_gil.py")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    interrupt_on_sigterm()  # a `kill` removes the temporary folders too
    with tempfile.TemporaryDirectory(prefix="chroma-gil-") as folder:
        client = chromadb.PersistentClient(path=folder)
        collection = client.get_or_create_collection(
            "knowledge", configuration={"hnsw": {"space": "cosine"}}
        )
        # Lists of floats, as server/knowledge/chroma.py passes them.
        vectors: list[Sequence[float] | Sequence[int]] = [
            [random.random() for _ in range(DIMENSION)] for _ in range(RECORDS)
        ]
        ticks = 0
        stop = threading.Event()

        def spin() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                time.sleep(0.0001)

        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            start, before = time.perf_counter(), ticks
            time.sleep(1.0)
            idle = (ticks - before) / (time.perf_counter() - start)
            spent = 0.0
            start, before = time.perf_counter(), ticks
            for round_number in range(args.rounds):
                began = time.perf_counter()
                collection.upsert(
                    ids=[f"r{round_number}-{n}" for n in range(RECORDS)],
                    embeddings=vectors,
                    documents=["x" * 1500] * RECORDS,
                    metadatas=[{"source": f"s{round_number}"}] * RECORDS,
                )
                spent += time.perf_counter() - began
            busy = (ticks - before) / (time.perf_counter() - start)
        finally:
            stop.set()
            spinner.join()
    print(
        f"chromadb {chromadb.__version__}: upsert of {RECORDS} x {DIMENSION} took"
        f" {spent / args.rounds * 1000:.1f} ms on average; another thread ran {idle:.0f}"
        f" times/s idle and {busy:.0f} times/s during the upserts"
    )


if __name__ == "__main__":
    main()
