"""The benchmark: the service against its floors, measured in the same run.

    python -m bench.run                 # the full run (about 20 minutes), writes bench/RESULTS.md
    python -m bench.run --quick         # a 3-second smoke run, written to bench/out/

For each worker count it measures, with the same load generators:

- the HTTP floor (`bench/floor_app.py`, a bare FastAPI endpoint);
- the database floor (`bench/db_floor.py`, the same rows written straight to
  each database from one connection, in batches of one document's states);
- the service (`targetsms-receiver serve`) on SQLite and PostgreSQL, with the
  access log on (as it ships) and off;

under wrk at 32 connections with 1-state and 100-state documents, and under
the open-loop generator (`bench/loadgen.py`) at a fixed 500 requests/s for
latency. Every request carries ids never used before. After each service run
it checks that the database holds at least every state acknowledged (so no
figure can come from dropped work), and it samples the peak resident memory
of the server's whole process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from app.config import Settings
from app.migrate import upgrade

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
SERVE = str(Path(PYTHON).parent / "targetsms-receiver")
WRK_SCRIPT = BENCH / "callbacks.lua"
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = secrets.token_urlsafe(32)  # never printed: commands are recorded with <token>
PATH = f"/callbacks/targetsms/{TOKEN}"
TABLES = ("events", "messages", "documents")


@dataclass
class Options:
    seconds: float
    repeats: int
    workers: list[int]
    databases: list[str]
    access_logs: list[bool]
    workloads: list[int]
    connections: int
    rate: float
    out: Path
    results: Path


@dataclass
class Record:
    """One configuration's repeated measurements."""

    kind: str  # "service", "http floor" or "db floor"
    database: str = "-"
    workers: int = 0
    access_log: bool | None = None
    states: int = 0  # states per document (0: the fixed-rate latency run)
    runs: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str = ""  # the database floor's way of writing

    def values(self, name: str) -> list[float]:
        return [run[name] for run in self.runs if name in run]


# ----------------------------------------------------------------- processes


class Server:
    """A server in a process group of its own, with its tree's peak memory sampled."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [*command, "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **env}
        self.log = log
        self.peak = self.peak_process = 0  # bytes: the whole tree, its largest process
        self._sampling = threading.Event()

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.log.parent,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url, timeout=1)
                break
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.command[:3]} did not start; see {self.log}"
                    ) from None
                time.sleep(0.05)
        self._sampling.set()
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._sampling.clear()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _sample(self) -> None:
        root = psutil.Process(self.process.pid)
        while self._sampling.is_set():
            sizes = []
            try:
                for proc in [root, *root.children(recursive=True)]:
                    sizes.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
            self.peak = max(self.peak, sum(sizes))
            self.peak_process = max(self.peak_process, *sizes, 0)
            time.sleep(0.1)

    def reset_peak(self) -> None:
        self.peak = self.peak_process = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: apt-get install wrk (Debian's package), then run again")
    print("installing wrk (Debian's package)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("wrk did not install")


# ----------------------------------------------------------------- load


def run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a load generator or floor; on failure, say so without the token."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        shown = redact(" ".join(command))
        raise SystemExit(f"failed ({done.returncode}): {shown}\n{redact(done.stderr)[-2000:]}")
    return done


def redact(text: str) -> str:
    return text.replace(TOKEN, "<token>")


def wrk(url: str, states: int, seconds: float, id_base: int, connections: int) -> dict[str, float]:
    command = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url + PATH, "--", str(states), str(id_base),
    ]  # fmt: skip
    done = run_tool(command)
    line = next(line for line in done.stdout.splitlines() if line.startswith("JSON "))
    result: dict[str, float] = json.loads(line.removeprefix("JSON "))
    seconds_run = result["duration_us"] / 1e6
    ok = result["requests"] - result["non_2xx"]
    result["requests_per_s"] = ok / seconds_run
    result["states_per_s"] = ok * states / seconds_run
    result["acked_states"] = ok * states
    return result


def fixed_rate(url: str, rate: float, seconds: float, id_base: int) -> dict[str, float]:
    command = [
        PYTHON, "-m", "bench.loadgen", "--url", url + PATH, "--rate", str(rate),
        "--seconds", str(seconds), "--states", "1", "--id-base", str(id_base),
    ]  # fmt: skip
    done = run_tool(command)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answers, errors = result.pop("answers"), result.pop("errors")
    if errors:
        print(f"  requests without an answer: {errors}", flush=True)
    result["ok"] = answers.get("200", 0)
    result["failed"] = sum(count for code, count in answers.items() if code != "200")
    result["acked_states"] = result["ok"]
    return {key: float(value) for key, value in result.items()}


# ----------------------------------------------------------------- databases


@contextmanager
def postgres_database(tag: str) -> Iterator[str]:
    name = f"tsr_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(directory: Path, tag: str) -> Iterator[str]:
    path = directory / f"{tag}.db"
    url = f"sqlite:///{path}"
    upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        yield url
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def fresh_database(kind: str, directory: Path, tag: str) -> AbstractContextManager[str]:
    """A migrated, empty database; a PostgreSQL one is dropped afterwards."""
    return postgres_database(tag) if kind == "postgres" else sqlite_database(directory, tag)


def empty(url: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=60)
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")


def stored_states(url: str) -> int:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split(":///", 1)[1], timeout=60)
        count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.close()
        return count
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])


# ----------------------------------------------------------------- measuring


class Bench:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.records: list[Record] = []
        self.id_base = 10**14

    def next_ids(self) -> int:
        self.id_base += 10**13
        return self.id_base

    def throughput(self, server: Server, record: Record, url: str | None = None) -> None:
        opts = self.options
        for _ in range(opts.repeats):
            if url:
                empty(url)
            server.reset_peak()
            result = wrk(server.url, record.states, opts.seconds, self.next_ids(), opts.connections)
            result["peak_rss_mb"] = server.peak / 2**20
            result["peak_process_mb"] = server.peak_process / 2**20
            if url:
                self.verify(url, result, record)
            record.runs.append(result)
            print(f"  {describe(record)}: {result['requests_per_s']:,.0f} req/s", flush=True)

    def latency(self, server: Server, record: Record, url: str | None = None) -> None:
        opts = self.options
        for _ in range(opts.repeats):
            if url:
                empty(url)
            server.reset_peak()
            result = fixed_rate(server.url, opts.rate, opts.seconds, self.next_ids())
            result["peak_rss_mb"] = server.peak / 2**20
            result["peak_process_mb"] = server.peak_process / 2**20
            if url:
                self.verify(url, result, record)
            record.runs.append(result)
            print(f"  {describe(record)}: p99 {result['p99_ms']:.1f} ms", flush=True)

    @staticmethod
    def verify(url: str, result: dict[str, float], record: Record) -> None:
        time.sleep(0.5)  # answers in flight when the load stopped
        stored = stored_states(url)
        result["stored_states"] = stored
        if stored < result["acked_states"]:
            lost = f"LOST: {result['acked_states']:.0f} acknowledged, {stored} stored"
            record.notes.append(lost)
            print(f"  {describe(record)}: {lost}", flush=True)

    def http_floor(self, workers: int) -> None:
        opts = self.options
        log = opts.out / f"floor-w{workers}.log"
        command = [PYTHON, "-m", "bench.floor_app", "--workers", str(workers)]
        with Server(command, {}, log) as server:
            wrk(server.url, 1, 2, self.next_ids(), opts.connections)  # warm-up
            for states in opts.workloads:
                record = Record("http floor", workers=workers, states=states)
                self.records.append(record)
                self.throughput(server, record)
            record = Record("http floor", workers=workers)
            self.records.append(record)
            self.latency(server, record)

    def db_floor(self, kind: str) -> None:
        opts = self.options
        with fresh_database(kind, opts.out, "floor") as url:
            for states in opts.workloads:
                record = Record("db floor", database=kind, states=states)
                self.records.append(record)
                method = "fastest"  # the first run tries each way; the rest use the winner
                for _ in range(opts.repeats):
                    empty(url)
                    result = self.db_floor_run(url, states, method)
                    if result["trials"]:
                        tried = ", ".join(f"{k} {v:,.0f}" for k, v in result["trials"].items())
                        record.notes.append(f"tried (states/s): {tried}")
                    method = result["method"]
                    record.method = method
                    record.runs.append(
                        {k: v for k, v in result.items() if isinstance(v, float | int)}
                    )
                    print(
                        f"  {describe(record)}: {result['states_per_s']:,.0f} states/s", flush=True
                    )

    def db_floor_run(self, url: str, states: int, method: str) -> dict[str, Any]:
        opts = self.options
        command = [
            PYTHON, "-m", "bench.db_floor", "--url", url, "--batch", str(states),
            "--seconds", str(opts.seconds), "--method", method, "--id-base", str(self.next_ids()),
            "--trial-seconds", str(max(1.0, opts.seconds / 3)),
        ]  # fmt: skip
        done = run_tool(command)
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def service(self, kind: str, workers: int, access_log: bool) -> None:
        opts = self.options
        tag = f"{kind}-w{workers}-{'log' if access_log else 'nolog'}"
        log = opts.out / f"service-{tag}.log"
        with fresh_database(kind, opts.out, f"service_{tag.replace('-', '_')}") as url:
            env = {
                "DATABASE_URL": url,
                "CALLBACK_TOKEN": TOKEN,
                "ACCESS_LOG": "true" if access_log else "false",
                "LOG_LEVEL": "INFO",
            }
            command = [SERVE, "serve", "--workers", str(workers)]
            with Server(command, env, log) as server:
                wrk(server.url, 1, 2, self.next_ids(), opts.connections)  # warm-up
                for states in opts.workloads:
                    record = Record("service", kind, workers, access_log, states)
                    self.records.append(record)
                    self.throughput(server, record, url)
                if access_log == opts.access_logs[0]:  # latency: once per database and workers
                    record = Record("service", kind, workers, access_log)
                    self.records.append(record)
                    self.latency(server, record, url)
        if TOKEN in log.read_text(errors="replace"):
            raise SystemExit(f"the callback token reached {log}")

    def run(self) -> None:
        opts = self.options
        for kind in opts.databases:
            print(f"database floor, {kind}", flush=True)
            self.db_floor(kind)
        for workers in opts.workers:
            print(f"HTTP floor, {workers} worker(s)", flush=True)
            self.http_floor(workers)
            for kind in opts.databases:
                for access_log in opts.access_logs:
                    print(
                        f"service, {kind}, {workers} worker(s), access log {access_log}", flush=True
                    )
                    self.service(kind, workers, access_log)


def describe(record: Record) -> str:
    load = f"{record.states}-state" if record.states else "fixed rate"
    log = "" if record.access_log is None else (", log" if record.access_log else ", no log")
    workers = f" w{record.workers}" if record.workers else ""
    return f"{record.kind} {record.database}{workers}{log} {load}"


# ----------------------------------------------------------------- reporting

TARGETS = {
    "ratio_1_state_postgres": 0.5,  # of the HTTP floor's requests/s, same workers
    "ratio_100_state": 1.0,  # of the database floor's states/s
    "p99_ms": 50.0,  # at 500 requests/s
    "peak_rss_mb": 150.0,  # under load
}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    low, high = min(values), max(values)
    return f"{fmt.format(median(values))} ({fmt.format(low)}-{fmt.format(high)})"


class Report:
    def __init__(self, records: list[Record], options: Options) -> None:
        self.records = records
        self.options = options

    def find(self, kind: str, **where: object) -> Record | None:
        for record in self.records:
            if record.kind == kind and all(getattr(record, k) == v for k, v in where.items()):
                return record
        return None

    def http_ratio(self, record: Record) -> float:
        floor = self.find("http floor", workers=record.workers, states=record.states)
        if floor is None or record.kind == "db floor":
            return float("nan")
        return median(record.values("requests_per_s")) / median(floor.values("requests_per_s"))

    def db_ratio(self, record: Record) -> float:
        floor = self.find("db floor", database=record.database, states=record.states)
        if floor is None:
            return float("nan")
        return median(record.values("states_per_s")) / median(floor.values("states_per_s"))

    def throughput_table(self) -> list[str]:
        lines = [
            "| load | what | database | workers | access log | requests/s | states/s "
            "| p50 ms | p99 ms | peak MB (largest process) | / HTTP floor | / DB floor "
            "| stored >= acked |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for record in self.records:
            if not record.states:
                continue
            rate_key = "transactions_per_s" if record.kind == "db floor" else "requests_per_s"
            what = f"db floor ({record.method})" if record.kind == "db floor" else record.kind
            lost = [note for note in record.notes if note.startswith("LOST")]
            checked = "-" if record.kind != "service" else ("NO: " + lost[0] if lost else "yes")
            lines.append(
                f"| {record.states}-state | {what} | {record.database} "
                f"| {record.workers or '-'} | {_log(record)} "
                f"| {spread(record.values(rate_key))} | {spread(record.values('states_per_s'))} "
                f"| {spread(record.values('p50_ms'), 1)} | {spread(record.values('p99_ms'), 1)} "
                f"| {_memory(record)} | {_ratio(self.http_ratio(record))} "
                f"| {_ratio(self.db_ratio(record))} | {checked} |"
            )
        return lines

    def latency_table(self) -> list[str]:
        lines = [
            "| what | database | workers | p50 ms | p99 ms | max ms | p99 / floor p99 "
            "| not 200 | peak MB (largest process) | generator lag ms | stored >= acked |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for record in self.records:
            if record.states or record.kind == "db floor":
                continue
            floor = self.find("http floor", workers=record.workers, states=0)
            ratio = float("nan")
            if floor is not None:
                ratio = median(record.values("p99_ms")) / median(floor.values("p99_ms"))
            lost = [note for note in record.notes if note.startswith("LOST")]
            checked = "-" if record.kind != "service" else ("NO: " + lost[0] if lost else "yes")
            lines.append(
                f"| {record.kind} | {record.database} | {record.workers} "
                f"| {spread(record.values('p50_ms'), 1)} | {spread(record.values('p99_ms'), 1)} "
                f"| {spread(record.values('max_ms'), 1)} | {_ratio(ratio)} "
                f"| {sum(record.values('failed')):.0f} | {_memory(record)} "
                f"| {spread(record.values('generator_lag_ms'), 1)} | {checked} |"
            )
        return lines

    def targets(self) -> list[str]:
        lines = ["| target | configuration | measured | met |", "|---|---|---|---|"]
        for record in self.records:
            if record.kind != "service":
                continue
            where = f"{record.database}, {record.workers} worker(s), {_log(record)}"
            if record.states == 1:
                # Issue 10: half the bare endpoint's rate, 40% with the access log on.
                share = 0.4 if record.access_log else 0.5
                name = f"1-state >= {share:.0%} of HTTP floor req/s"
                lines.append(_target(name, where, self.http_ratio(record), share))
            if record.states == 100:
                ratio = self.db_ratio(record)
                lines.append(_target("100-state >= 100% of DB floor states/s", where, ratio, 1.0))
            if record.states == 0:
                p99 = median(record.values("p99_ms"))
                lines.append(_target("p99 < 50 ms at 500 req/s", where, p99, 50.0, below=True))
            if record.states:
                # Issue 10 sets it per process: uvicorn's workers and SQLite's
                # commit process are processes of their own. The tables give
                # the whole tree's figure too.
                load = f"{where}, {record.states}-state"
                peak = max(record.values("peak_process_mb"), default=float("nan"))
                lines.append(_target("peak memory < 150 MB per process", load, peak, 150.0, True))
        return lines

    def notes(self) -> list[str]:
        return [
            f"- {describe(record)}: {note}"
            for record in self.records
            for note in record.notes
            if not note.startswith("LOST")
        ]


def _memory(record: Record) -> str:
    tree, largest = record.values("peak_rss_mb"), record.values("peak_process_mb")
    if not tree:
        return "-"
    return f"{max(tree):.0f} ({max(largest):.0f})"


def _log(record: Record) -> str:
    return "-" if record.access_log is None else ("on" if record.access_log else "off")


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: no floor to compare with


def _target(name: str, where: str, value: float, limit: float, below: bool = False) -> str:
    met = value < limit if below else value >= limit
    shown = f"{value:.1f}" if below else f"{value:.0%}"
    return f"| {name} | {where} | {shown} | {'yes' if met else 'NO'} |"


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = psutil.virtual_memory().total / 2**30
    return {
        "cpus": f"{os.cpu_count()} ({cpu})",
        "memory": f"{memory:.1f} GiB",
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for package in (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "SQLAlchemy",
        "psycopg",
    ):
        found[package] = version(package)
    found["SQLite"] = sqlite3.sqlite_version
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            found["PostgreSQL"] = str(row[0]) if row else "?"
    except psycopg.OperationalError:
        found["PostgreSQL"] = "not reachable"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    found["wrk"] = wrk_version.split("[")[0].replace("wrk ", "").strip() or "?"
    return found


def markdown(report: Report, started: datetime, loads: tuple[str, str], argv: list[str]) -> str:
    opts = report.options
    info = machine() | {"load average before / after": f"{loads[0]} / {loads[1]}"}
    lines = [
        "# Benchmark results",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC with `python -m bench.run {' '.join(argv)}`: "
        f"{opts.repeats} run(s) of {opts.seconds:g} s per figure, shown as median (min-max).",
        "",
        "## Machine",
        "",
        *[f"- {name}: {value}" for name, value in info.items()],
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Throughput: wrk, 32 connections, every request new ids",
        "",
        *report.throughput_table(),
        "",
        f"## Latency: {opts.rate:g} requests/s, open loop, 1-state documents",
        "",
        *report.latency_table(),
        "",
        "## Targets (issues 6 and 10)",
        "",
        *report.targets(),
        "",
        "## Notes",
        "",
        *report.notes(),
        "- peak MB: the highest resident memory of the server's whole process tree"
        " (uvicorn's supervisor and its workers when workers > 1, and on SQLite each"
        " worker's commit process), sampled every 0.1 s; in brackets the largest single"
        " process, which the memory target is about.",
        "- stored >= acked: after each run the events table held at least one row"
        " per acknowledged state (every request carries new ids).",
        "",
        "## Commands",
        "",
        "```sh",
        *commands(opts),
        "```",
        "",
    ]
    return "\n".join(lines)


def commands(opts: Options) -> list[str]:
    url = "http://127.0.0.1:PORT/callbacks/targetsms/<token>"
    return [
        "# the service (DATABASE_URL, CALLBACK_TOKEN and ACCESS_LOG=true|false in the environment)",
        "targetsms-receiver serve --host 127.0.0.1 --port PORT --workers N",
        "# the HTTP floor",
        "python -m bench.floor_app --host 127.0.0.1 --port PORT --workers N",
        "# throughput (STATES: 1 or 100; ID_BASE: a fresh id range per run)",
        f"wrk -t2 -c{opts.connections} -d{opts.seconds:g}s --timeout 10s"
        f" -s bench/callbacks.lua {url} -- STATES ID_BASE",
        "# latency",
        f"python -m bench.loadgen --url {url} --rate {opts.rate:g} --seconds {opts.seconds:g}"
        " --states 1 --id-base ID_BASE",
        "# the database floor (the first run with --method fastest)",
        f"python -m bench.db_floor --url DATABASE_URL --batch STATES --seconds {opts.seconds:g}"
        " --method fastest|executemany|unnest|copy",
    ]


# ----------------------------------------------------------------- command line


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, help="per run (default 10; --quick: 3)")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3; --quick: 1)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default 1,2)")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--access-log", default="on,off", help="on, off or on,off")
    parser.add_argument("--workloads", default="1,100", help="states per document")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500, help="latency run, requests/s")
    parser.add_argument("--quick", action="store_true", help="3 s x 1 run, into bench/out/")
    parser.add_argument("--results", type=Path, help="default bench/RESULTS.md")
    args = parser.parse_args(argv)
    seconds, repeats = (3, 1) if args.quick else (10, 3)
    out = BENCH / "out" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    default_results = out / "RESULTS.md" if args.quick else BENCH / "RESULTS.md"
    return Options(
        seconds=args.seconds or seconds,
        repeats=args.repeats or repeats,
        workers=[int(n) for n in args.workers.split(",")],
        databases=args.databases.split(","),
        access_logs=[value == "on" for value in args.access_log.split(",")],
        workloads=[int(n) for n in args.workloads.split(",")],
        connections=args.connections,
        rate=args.rate,
        out=out,
        results=args.results or default_results,
    )


def main() -> None:
    argv = sys.argv[1:]
    options = parse_options(argv)
    ensure_wrk()
    options.out.mkdir(parents=True, exist_ok=True)
    started, load_before = datetime.now(UTC), _loadavg()
    bench = Bench(options)
    bench.run()
    report = Report(bench.records, options)
    (options.out / "runs.json").write_text(
        json.dumps([record.__dict__ for record in bench.records], indent=1, default=str)
    )
    text = markdown(report, started, (load_before, _loadavg()), argv)
    options.results.write_text(text + _kept(options.results))
    print()
    print(text)
    print(f"written to {options.results}")


KEPT = "<!-- kept by bench.run -->"


def _kept(results: Path) -> str:
    """The hand-written part of the results file (from KEPT on), kept across runs."""
    old = results.read_text() if results.exists() else ""
    return "\n" + old[old.index(KEPT) :] if KEPT in old else ""


def _loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
