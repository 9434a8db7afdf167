"""A fixed-rate, open-loop HTTP load generator for latency (Debian has no wrk2).

Request n is due at `start + n / rate` and is sent then whether or not earlier
requests have been answered (on an idle keep-alive connection, or a new one
when none is idle). Its latency is measured from when it was *due*, not from
when it happened to be sent, so a stalled server or a late generator shows up
in the figures instead of being hidden (no coordinated omission).

Each request is a callback document with ids never used before:

    python -m bench.loadgen --url http://127.0.0.1:8000/callbacks/targetsms/TOKEN \\
        --rate 500 --seconds 10 --states 1 --id-base 900000000000000

prints one JSON line: counts, answers by status, latency percentiles (ms) and
how far behind schedule the generator itself fell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

CONNECT_TIMEOUT = 5.0
# uvicorn closes a keep-alive connection idle for 5 s; reusing one it is closing
# would count as a failed request that the server never saw.
KEEPALIVE_SECONDS = 4.0


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, from when due
    answers: Counter[int] = field(default_factory=Counter)  # 0: no answer
    errors: Counter[str] = field(default_factory=Counter)  # why there was no answer
    lag: float = 0.0  # how late the generator sent its latest-sent request


def callback_body(first_id: int, states: int) -> bytes:
    body = "".join(
        f'<state id_sms="{first_id + k}" time="2024-05-01 10:00:00">deliver</state>'
        for k in range(states)
    )
    return f'<?xml version="1.0" encoding="utf-8"?><request>{body}</request>'.encode()


class Connections:
    """Idle keep-alive connections, opened on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < KEEPALIVE_SECONDS:
                return reader, writer
            writer.close()  # the server may be closing it right now
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
        )

    def give_back(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append((*conn, time.monotonic()))

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


async def exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> int:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def one(pool: Connections, request: bytes, due: float, timeout: float, tally: Tally) -> None:
    conn = None
    try:
        conn = await pool.take()
        status = await asyncio.wait_for(exchange(conn, request), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        tally.answers[0] += 1
        tally.errors[type(exc).__name__] += 1
        if conn is not None:
            conn[1].close()
        tally.latencies.append(time.monotonic() - due)
        return
    tally.answers[status] += 1
    tally.latencies.append(time.monotonic() - due)
    pool.give_back(conn)


async def run(
    url: str, rate: float, seconds: float, states: int, id_base: int, timeout: float
) -> Tally:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    pool, tally = Connections(host, port), Tally()
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.lag = max(tally.lag, time.monotonic() - due)
        body = callback_body(id_base + n * states, states)
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        task = asyncio.create_task(one(pool, request, due, timeout, tally))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    pool.close()
    return tally


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(tally: Tally, rate: float, seconds: float) -> dict[str, object]:
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(tally.latencies),
        "answers": {str(code): count for code, count in sorted(tally.answers.items())},
        "errors": dict(tally.errors),
        "p50_ms": percentile(tally.latencies, 0.50) * 1000,
        "p90_ms": percentile(tally.latencies, 0.90) * 1000,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000,
        "max_ms": max(tally.latencies, default=float("nan")) * 1000,
        "generator_lag_ms": tally.lag * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--states", type=int, default=1)
    parser.add_argument("--id-base", type=int, default=900_000_000_000_000)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    job = run(args.url, args.rate, args.seconds, args.states, args.id_base, args.timeout)
    tally = uvloop.run(job)  # uvicorn[standard] brings it; less overhead per request
    print(json.dumps(summary(tally, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
