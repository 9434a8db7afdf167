"""CPU per stored state of one group commit, in process: `store.commit` alone.

    python -m bench.store_cpu                       # SQLite in a temporary file
    DATABASE_URL=postgresql://... python -m bench.store_cpu   # a migrated, empty database
    python -m bench.store_cpu --profile [--case 16x1]   # cProfile (default: 32 x 100)
    valgrind --tool=callgrind python -m bench.store_cpu --case 32x100 --runs 1 --commits 10

Migrates the database (`DATABASE_URL`, else a new SQLite file), then times
`store.commit` with `time.process_time` (user + system CPU of the whole
process) on the group commits the writer makes: 32 callback documents of 100
states, and 16 documents of one state. Each document is parsed as the endpoint
parses it (`protocol.parse_document`, not timed) and carries ids never used
before, as bench.run's load does. Prints, per case, the median over `--runs`
runs of the CPU per state and per document, in microseconds. Nothing else is
measured: no HTTP, no parsing, no writer thread; the figure a busy machine
disturbs least. Under callgrind, instructions are counted exactly whatever the
machine does: the difference between two runs of different `--commits`, over
the difference in commits, is the count per group commit. `--gc-freeze`
shows what the garbage collector's full passes over the process's long-lived
objects cost each commit.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from app import store
from app.config import Settings
from app.db import create_db_engine
from app.ingest import Submission
from app.migrate import upgrade
from app.protocol import parse_document
from bench.loadgen import callback_body

CASES = ((32, 100), (16, 1))  # (documents, states per document) per group commit


def group_commits(settings: Settings, documents: int, states: int) -> Iterator[list[Submission]]:
    """Group commits of `documents` parsed documents each, with fresh ids every time."""
    for n in itertools.count():
        first = 10**15 + n * documents * states
        received_at = datetime.now(UTC)
        batch = []
        for d in range(documents):
            body = callback_body(first + d * states, states)
            parsed = parse_document(body, settings.zone, settings.max_states_per_document)
            batch.append(Submission(parsed.states, "callback", received_at, body, "127.0.0.1"))
        yield batch


def cpu_per_commit(engine: Engine, batches: Iterator[list[Submission]], commits: int) -> float:
    """Seconds of CPU for `commits` group commits, each built before its clock starts."""
    spent = 0.0
    for batch in itertools.islice(batches, commits):
        now = datetime.now(UTC)
        started = time.process_time()
        store.commit(engine, batch, now)
        spent += time.process_time() - started
    return spent / commits


def measure(
    engine: Engine, settings: Settings, cases: list[tuple[int, int]], runs: int, commits: int
) -> None:
    batches = {case: group_commits(settings, *case) for case in cases}
    for case in cases:  # warm up: caches, the first pages of each table
        cpu_per_commit(engine, batches[case], 2)
    figures: dict[tuple[int, int], list[float]] = {case: [] for case in cases}
    for _ in range(runs):  # the cases interleaved, so a change in load falls on both
        for case in cases:
            # Fewer states, more commits: about as long a run for each case.
            count = commits if case[1] > 1 else commits * 10
            figures[case].append(cpu_per_commit(engine, batches[case], count))
    for (documents, states), seconds in figures.items():
        per_commit = statistics.median(seconds) * 1e6
        spread = (min(seconds) * 1e6, max(seconds) * 1e6)
        print(
            f"{documents:>3} docs x {states:>3} states: "
            f"{per_commit / (documents * states):7.2f} us/state "
            f"{per_commit / documents:8.1f} us/document "
            f"(median of {runs}; per commit {spread[0]:.0f}-{spread[1]:.0f} us)"
        )


def profile(engine: Engine, settings: Settings, case: tuple[int, int], commits: int) -> None:
    batches = group_commits(settings, *case)
    cpu_per_commit(engine, batches, 2)
    built = list(itertools.islice(batches, commits))  # parsed before the profiler starts
    profiler = cProfile.Profile()
    profiler.enable()
    cpu_per_commit(engine, iter(built), commits)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--commits", type=int, default=10, help="32 x 100 commits per run")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once set up, as a server could after its start (the service does not)",
    )
    parser.add_argument("--case", choices=[f"{d}x{s}" for d, s in CASES], help="only this one")
    args = parser.parse_args()
    cases = [case for case in CASES if args.case in (None, f"{case[0]}x{case[1]}")]
    token = os.environ.get("CALLBACK_TOKEN", "store-cpu-bench-token-0123456789abcdef")
    with tempfile.TemporaryDirectory() as directory:
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{Path(directory) / 'store_cpu.db'}"
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            callback_token=token,
        )
        upgrade(settings)
        engine = create_db_engine(settings)
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        try:
            if args.profile:
                profile(engine, settings, cases[0], args.commits)
            else:
                measure(engine, settings, cases, args.runs, args.commits)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
