"""The fault tests' tools: the service as a real process, and a load that keeps a ledger.

`ServerProcess` runs `targetsms-receiver serve` (or another ASGI app under
uvicorn) in a process group of its own, so that `kill()` is a real SIGKILL of
every process in it. `drive_load` sends callbacks with ids never used before,
at a fixed rate and without waiting for answers (open loop), and writes into a
`Ledger` exactly which ids the server acknowledged. `unstored` then compares
the ledger with what the database holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import Engine

from tests.conftest import CALLBACK_PATH, TEST_TOKEN, free_port, rows

REPO = Path(__file__).resolve().parents[2]
FULL = os.environ.get("FAULTS_FULL", "").lower() in {"1", "true", "yes"}
SERVE = [str(Path(sys.executable).parent / "targetsms-receiver"), "serve"]
ACKED_ID = re.compile(rb"<id_sms>([0-9]+)</id_sms>")
STATUSES = ("deliver", "not_deliver", "expired", "send", "read")


def acked_ids(body: bytes) -> list[str]:
    return [match.decode() for match in ACKED_ID.findall(body)]


class ServerProcess:
    """A server in its own process group, restartable on the same port."""

    def __init__(
        self, workdir: Path, env: dict[str, str], command: list[str] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CALLBACK_TOKEN": TEST_TOKEN,
            "PYTHONPATH": str(REPO),
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.command = [*(command or SERVE), "--host", "127.0.0.1", "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30) -> None:
        # The working directory is the test's own: no stray `.env` is read.
        with open(self.workdir / f"server-{self.port}.log", "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: {self.log()}"
                )
            try:
                httpx.get(f"{self.url}/", timeout=1)  # any answer (404) means it serves
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL to every process of the server: no shutdown code runs."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its children."""
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        total = 0
        for proc in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):  # a worker just exited
                total += proc.memory_info().rss
        return total

    def log(self) -> str:
        return (self.workdir / f"server-{self.port}.log").read_text(errors="replace")[-2000:]

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class Ledger:
    """What the load sent and what the server acknowledged."""

    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (status, time)
    acked: set[str] = field(default_factory=set)
    foreign_acks: set[str] = field(default_factory=set)  # acked but not in the request
    answers: Counter[int] = field(default_factory=Counter)  # HTTP status; 0: no answer
    durations: list[float] = field(default_factory=list)
    last_ack_at: float = 0.0

    @property
    def longest(self) -> float:
        return max(self.durations, default=0.0)


def fresh_ids(start: int = 10**12) -> Iterator[str]:
    return (str(n) for n in itertools.count(start))


def state_document(states: list[tuple[str, str, str]]) -> bytes:
    body = "".join(f'<state id_sms="{i}" time="{t}">{s}</state>' for i, s, t in states)
    return f'<?xml version="1.0" encoding="utf-8"?><request>{body}</request>'.encode()


async def drive_load(
    url: str,
    rate: float,
    stop: asyncio.Event,
    ledger: Ledger,
    ids: Iterator[str],
    *,
    states_per_request: int = 3,
    timeout: float = 30,
    rng: random.Random | None = None,
) -> None:
    """Send `rate` callbacks a second, each with new ids, until `stop` is set."""
    rng = rng or random.Random(0)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        for n in itertools.count():
            if stop.is_set():
                break
            states = [_random_state(next(ids), rng) for _ in range(states_per_request)]
            task = asyncio.create_task(_send(client, states, ledger))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks)


def _random_state(id_sms: str, rng: random.Random) -> tuple[str, str, str]:
    status = rng.choice(STATUSES)
    when = (
        ""
        if status == "send"
        else f"2024-05-{rng.randint(1, 28):02d} 12:{rng.randint(0, 59):02d}:00"
    )
    return (id_sms, status, when)


async def _send(
    client: httpx.AsyncClient, states: list[tuple[str, str, str]], ledger: Ledger
) -> None:
    for id_sms, status, when in states:
        ledger.sent[id_sms] = (status, when)
    began = time.monotonic()
    try:
        response = await client.post(CALLBACK_PATH, content=state_document(states))
    except httpx.HTTPError:
        ledger.answers[0] += 1  # killed mid-request, refused, or timed out
        ledger.durations.append(time.monotonic() - began)
        return
    ledger.durations.append(time.monotonic() - began)
    ledger.answers[response.status_code] += 1
    if response.status_code == 200:
        acked = acked_ids(response.content)
        ledger.acked.update(acked)
        ledger.foreign_acks.update(set(acked) - {state[0] for state in states})
        ledger.last_ack_at = time.monotonic()


def stored_states(engine: Engine) -> dict[str, set[tuple[str, str]]]:
    stored: dict[str, set[tuple[str, str]]] = {}
    for id_sms, status, when in rows(engine, "SELECT id_sms, status, time_raw FROM events"):
        stored.setdefault(str(id_sms), set()).add((str(status), str(when)))
    return stored


def unstored(engine: Engine, ledger: Ledger) -> list[str]:
    """Acknowledged ids whose state (as sent) is not in the database."""
    stored = stored_states(engine)
    current = {str(i): str(s) for i, s in rows(engine, "SELECT id_sms, status FROM messages")}
    missing = []
    for id_sms in sorted(ledger.acked):
        status, when = ledger.sent[id_sms]
        # Each id is sent with one state only, so it is also the current one.
        if (status, when) not in stored.get(id_sms, set()) or current.get(id_sms) != status:
            missing.append(id_sms)
    return missing
