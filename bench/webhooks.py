"""Webhook delivery figures: end-to-end lag at a fixed callback rate, and throughput
against the change-feed floor measured in the same run.

    .venv/bin/python -m bench.webhooks [--kind postgres|sqlite] [--rate 200] [--seconds 20]
        [--backlog 30000] [--append bench/RESULTS.md]

1. **Lag.** The service (`targetsms-receiver serve`, one worker, deliveries in
   the service) gets one-state callbacks at `--rate` per second (open loop,
   new ids each); a local receiver (a plain threaded HTTP server answering 204)
   notes when each id arrives. Lag = arrival - the moment the callback's 200
   reached the load generator. Same process, same monotonic clock.
2. **Throughput.** `--backlog` states are stored; the floor is one client
   following `GET /api/v1/changes?limit=WEBHOOK_BATCH_SIZE` from the start to
   the end (reading the change feed alone, over HTTP, as a consumer would); then
   a subscription is rewound to the start and the time until the receiver has
   every state gives delivered states/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvloop

from app.config import Settings
from app.db import create_db_engine, write_transaction
from app.ingest import Submission
from app.protocol import IncomingState
from app.store import store_batch
from bench.loadgen import Connections, callback_body, exchange, percentile
from bench.run import _free_port, fresh_database

TOKEN = "bench-webhooks-token-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": "Bearer bench-admin-key"}
BATCH = 100


def receive(port: int, out: Path) -> None:
    """The receiver process: answers 204 at once and writes "<monotonic> <id_sms>"
    for each change (CLOCK_MONOTONIC is the same for every process)."""
    sink = out.open("a")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            now = time.monotonic()
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            ids = [change["id_sms"] for change in json.loads(body)["data"]["changes"]]
            sink.write("".join(f"{now} {id_sms}\n" for id_sms in ids))
            sink.flush()

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Receiver:
    """The receiver process, and what it noted so far."""

    def __init__(self, directory: Path) -> None:
        port = _free_port()
        self.out = directory / f"arrivals-{port}.txt"
        self.out.touch()
        command = [sys.executable, "-m", "bench.webhooks", "--receive", str(port), "--out"]
        self.process = subprocess.Popen([*command, str(self.out)])
        self.url = f"http://127.0.0.1:{port}/hook"
        for _ in range(300):
            try:
                httpx.get(self.url)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        self.seen: dict[str, float] = {}
        self.offset = 0

    def first_arrival(self) -> dict[str, float]:
        """id_sms -> when it first arrived."""
        with self.out.open() as lines:
            lines.seek(self.offset)
            for line in lines:
                if not line.endswith("\n"):
                    break  # half written: read again next time
                at, id_sms = line.split()
                self.seen.setdefault(id_sms, float(at))
                self.offset += len(line)
        return self.seen

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def service(database_url: str, directory: Path) -> Iterator[str]:
    port = _free_port()
    env = os.environ | {
        "DATABASE_URL": database_url,
        "CALLBACK_TOKEN": TOKEN,
        "ADMIN_API_KEYS": "bench-admin-key",
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_ALLOW_HTTP": "true",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "WEBHOOK_BATCH_SIZE": str(BATCH),
    }
    binary = str(Path(sys.executable).parent / "targetsms-receiver")
    command = [binary, "serve", "--port", str(port), "--migrate"]
    log = (directory / "serve.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/livez")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


async def paced_callbacks(
    url: str, rate: float, seconds: float, id_base: int
) -> tuple[dict[str, float], list[float]]:
    """POST one-state callbacks at `rate`/s (open loop, bench/loadgen.py's client);
    when each id's 200 came back, and each callback's latency from when it was due."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST /callbacks/targetsms/{TOKEN} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    pool, acked = Connections(host, port), {}
    waits: list[float] = []  # the callbacks' own latency, from when each was due

    async def one(n: int, due: float) -> None:
        body = callback_body(id_base + n, 1)
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        try:
            conn = await pool.take()
        except (OSError, TimeoutError):
            return  # not acknowledged: not counted
        try:
            status = await exchange(conn, request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conn[1].close()
            return
        if status == 200:
            acked[str(id_base + n)] = time.monotonic()
            waits.append(acked[str(id_base + n)] - due)
        pool.give_back(conn)

    start, tasks = time.monotonic(), []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, start + n / rate)))
    await asyncio.gather(*tasks)
    pool.close()
    return acked, waits


def measure_lag(url: str, directory: Path, rate: float, seconds: float) -> dict[str, float]:
    receiver = Receiver(directory)
    try:
        created = httpx.post(
            f"{url}/api/v1/admin/webhooks", json={"url": receiver.url}, headers=ADMIN
        )
        created.raise_for_status()
        acked, waits = uvloop.run(paced_callbacks(url, rate, seconds, 7 * 10**14))
        deadline = time.monotonic() + 30
        while len(receiver.first_arrival()) < len(acked) and time.monotonic() < deadline:
            time.sleep(0.2)
        arrived = receiver.first_arrival()
        httpx.delete(f"{url}/api/v1/admin/webhooks/{created.json()['id']}", headers=ADMIN)
    finally:
        receiver.close()
    lags = [arrived[i] - at for i, at in acked.items() if i in arrived]
    return {
        "callbacks_acked": len(acked),
        "delivered": len(lags),
        "missing": len(acked) - len(lags),
        "p50_ms": statistics.median(lags) * 1000,
        "p99_ms": percentile(lags, 0.99) * 1000,
        "max_ms": max(lags) * 1000,
        "callback_p50_ms": statistics.median(waits) * 1000,
        "callback_p99_ms": percentile(waits, 0.99) * 1000,
    }


def fill(database_url: str, states: int) -> None:
    settings = Settings(_env_file=None, database_url=database_url)  # type: ignore[call-arg]
    engine = create_db_engine(settings)
    now = datetime.now(UTC)
    for start in range(0, states, 5000):
        batch = [
            IncomingState(str(8 * 10**14 + n), "deliver", "2024-05-01 10:00:00", None)
            for n in range(start, min(start + 5000, states))
        ]
        with write_transaction(engine) as conn:
            store_batch(conn, [Submission(batch, "callback", received_at=now)], now)
    engine.dispose()


def feed_floor(url: str) -> tuple[int, float]:
    """(states, seconds) to follow the whole feed with GET /changes?limit=BATCH."""
    count, after = 0, None
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as client:
        started = time.perf_counter()
        while True:
            params: dict[str, str | int] = {"limit": BATCH} | ({"after": after} if after else {})
            page = client.get("/api/v1/changes", params=params).json()
            if not page["items"]:
                return count, time.perf_counter() - started
            count += len(page["items"])
            after = page["next_cursor"]


def delivery_rate(url: str, directory: Path, total: int) -> tuple[int, float]:
    """(states, seconds) for a subscription rewound to the start to deliver them all."""
    receiver = Receiver(directory)
    try:
        created = httpx.post(
            f"{url}/api/v1/admin/webhooks", json={"url": receiver.url}, headers=ADMIN
        )
        created.raise_for_status()
        path = f"{url}/api/v1/admin/webhooks/{created.json()['id']}"
        started = time.perf_counter()
        httpx.post(f"{path}/replay", json={"since": "2000-01-01T00:00:00Z"}, headers=ADMIN)
        while len(receiver.first_arrival()) < total and time.perf_counter() - started < 300:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        count = len(receiver.first_arrival())
        httpx.delete(path, headers=ADMIN)
    finally:
        receiver.close()
    return count, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--append", type=Path, help="Append the results to this markdown file.")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # the receiver process
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive, args.out)
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        with (
            fresh_database(args.kind, directory, "webhooks") as database_url,
            service(database_url, directory) as url,
        ):
            lag = measure_lag(url, directory, args.rate, args.seconds)
            print(json.dumps({"lag": lag}), flush=True)
            fill(database_url, args.backlog)
            floors, rates = [], []
            for _ in range(args.rounds):
                states, seconds = feed_floor(url)
                floors.append(states / seconds)
                delivered, seconds = delivery_rate(url, directory, states)
                rates.append(delivered / seconds)
                print(json.dumps({"floor": floors[-1], "delivery": rates[-1]}), flush=True)
    report = render(args, lag, floors, rates)
    print(report)
    if args.append:
        with args.append.open("a") as out:
            out.write("\n" + report)


def render(
    args: argparse.Namespace, lag: dict[str, float], floors: list[float], rates: list[float]
) -> str:
    floor, rate = statistics.median(floors), statistics.median(rates)
    averages = os.getloadavg()
    load = " ".join(f"{x:.2f}" for x in averages)
    # Said only when true: a quiet run's figures are the ones to read.
    busy = (
        " The machine was busier than its cores during the run (load average above"
        " the core count): the figures are noisy and pessimistic."
        if averages[0] > (os.cpu_count() or 1)
        else ""
    )
    ok = {True: "yes", False: "NO"}
    return "\n".join(
        [
            f"## Webhooks ({args.kind}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
            "",
            f"`python -m bench.webhooks --kind {args.kind} --rate {args.rate:g} "
            f"--seconds {args.seconds:g} --backlog {args.backlog}`; one `serve` worker, "
            f"deliveries in the service, batch {BATCH}, receiver a threaded HTTP "
            f"server in its own process answering 204. Load average at the end: {load}."
            f"{busy}",
            "",
            "| what | figure | target | met |",
            "|---|---|---|---|",
            f"| lag, callback 200 -> arrival at the receiver, p50 at {args.rate:g}/s "
            f"| {lag['p50_ms']:.0f} ms | | |",
            f"| lag p99 at {args.rate:g}/s | {lag['p99_ms']:.0f} ms | < 1000 ms "
            f"| {ok[lag['p99_ms'] < 1000]} |",
            f"| lag max | {lag['max_ms']:.0f} ms | | |",
            f"| the callbacks' own latency (from when due), p50 / p99 | "
            f"{lag['callback_p50_ms']:.0f} / {lag['callback_p99_ms']:.0f} ms | | |",
            f"| callbacks acknowledged / delivered | {lag['callbacks_acked']:.0f} / "
            f"{lag['delivered']:.0f} | all | {ok[lag['missing'] == 0]} |",
            f"| floor: following GET /changes?limit={BATCH} | {floor:,.0f} states/s "
            f"(runs: {', '.join(f'{x:,.0f}' for x in floors)}) | | |",
            f"| delivered with a fast receiver | {rate:,.0f} states/s "
            f"(runs: {', '.join(f'{x:,.0f}' for x in rates)}) | | |",
            f"| delivery / floor | {rate / floor:.0%} | >= 50% | {ok[rate / floor >= 0.5]} |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
