"""Where a callback's time goes: py-spy on the service under wrk.

    python -m bench.profile --database sqlite --states 1 --access-log off

Starts `targetsms-receiver serve` (1 worker) on a fresh database, drives it
with wrk (bench/callbacks.lua) and records it with `py-spy record --native
--subprocesses` (every thread of the server and of SQLite's commit process,
idle samples left out), then prints the share of samples in each part of a
request: HTTP and middleware, parsing, planning, SQL, commit, logging,
metrics, and the hand-off between the event loop and the writer (with
SQLite: the pickles and the socket to the commit process), and the commit
process's share of all samples. Needs py-spy (`pip install py-spy`) and root
(ptrace).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path

from bench.run import SERVE, TOKEN, Server, ensure_wrk, fresh_database, wrk

# py-spy counts a thread blocked on a lock as busy; these innermost frames are
# a thread with nothing to do (an idle worker, the event loop waiting on I/O).
IDLE = ("_queue_SimpleQueue_get", "epoll_pwait", "epoll_wait", "select (libc")
# A thread waiting to take the GIL back after a C call (sqlite3, psycopg, I/O):
# the cost of two threads sharing one interpreter.
GIL_WAIT = ("pthread_cond_timedwait", "take_gil")

# A commit's innermost frames are SQLite's or libc's own (sqlite3PagerCommit,
# fdatasync), which would read as SQL: any commit frame in a stack makes it
# the commit's.
COMMIT = ("_commit_impl", "do_commit", "commit (psycopg/", "pysqlite_connection_commit")

# Each sample goes to the first part whose marker appears in its stack, read
# from the innermost frame outwards; order the markers from specific to broad.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("GIL wait", GIL_WAIT),
    ("logging", ("logging/__init__", "app/logs.py")),
    ("metrics", ("prometheus_client",)),
    ("parsing", ("app/protocol.py", "defusedxml", "xml/etree")),
    ("planning", ("app/ingest.py",)),
    ("commit", COMMIT),
    ("SQL", ("sqlalchemy", "psycopg", "sqlite3", "app/store.py")),
    (
        "writer hand-off",
        (
            "app/writer.py",
            "app/sqlite_commit.py",
            "_pickle",
            "concurrent/futures",
            "threading.py",
            "queue.py",
        ),
    ),
    ("HTTP and middleware", ("uvicorn", "starlette", "fastapi", "httptools", "h11", "app/api")),
    ("event loop", ("asyncio", "uvloop")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--states", type=int, default=1)
    parser.add_argument("--access-log", default="off", choices=["on", "off"])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    args.out = args.out.resolve()
    ensure_wrk()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.database}-{args.states}-{args.access_log}"
    with fresh_database(args.database, args.out, f"profile_{tag.replace('-', '_')}") as url:
        env = {
            "DATABASE_URL": url,
            "CALLBACK_TOKEN": TOKEN,
            "ACCESS_LOG": "true" if args.access_log == "on" else "false",
        }
        command = [SERVE, "serve", "--workers", "1"]
        with Server(command, env, args.out / f"profile-{tag}.log") as server:
            wrk(server.url, args.states, 2, 9 * 10**15, 32)  # warm-up
            raw = args.out / f"profile-{tag}.txt"
            with open(args.out / f"py-spy-{tag}.log", "w") as errors:
                record = subprocess.Popen(
                    [spy, "record", "--native", "--subprocesses", "--format", "raw",
                     "-d", str(args.seconds - 2),
                     "-o", str(raw), "--pid", str(server.process.pid)],
                    stdout=subprocess.DEVNULL, stderr=errors,
                )  # fmt: skip
            result = wrk(server.url, args.states, args.seconds, 8 * 10**15, 32)
            record.wait()
            if record.returncode != 0:
                raise SystemExit(f"py-spy failed; see {args.out}/py-spy-{tag}.log")
    print(f"{tag}: {result['requests_per_s']:.0f} req/s under the profiler; samples in {raw}")
    show(raw)


def show(raw: Path) -> None:
    parts, child = breakdown(raw)
    for part, share in parts.items():
        print(f"  {part:22s} {share:5.1%}")
    print(f"  of which in SQLite's commit process: {child:.1%}")


def breakdown(raw: Path) -> tuple[dict[str, float], float]:
    """Each part's share of the samples in py-spy's collapsed stacks, and the
    share of SQLite's commit process (its stacks start with two "process"
    frames: the server's, then its own)."""
    counts: collections.Counter[str] = collections.Counter()
    child = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and count.isdigit() and not any(m in f for f in frames[-4:] for m in IDLE):
            counts[_part(frames)] += int(count)
            child += int(count) if frames[1:2] and frames[1].startswith("process ") else 0
    total = sum(counts.values()) or 1
    parts = [*PARTS, ("other", ())]
    return {part: counts[part] / total for part, _ in parts if counts[part]}, child / total


def _part(frames: list[str]) -> str:
    if any(marker in frame for frame in frames[-3:] for marker in GIL_WAIT):
        return "GIL wait"
    if any(marker in frame for frame in frames for marker in COMMIT):
        return "commit"
    for frame in reversed(frames):
        for part, markers in PARTS:
            if any(marker in frame for marker in markers):
                return part
    return "other"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--show":  # a breakdown of a recorded run
        show(Path(sys.argv[2]))
    else:
        main()
