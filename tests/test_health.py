"""Health endpoints and graceful shutdown, on the real `serve` process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from app.config import Settings
from app.db import WRITE_LOCK_KEY, create_db_engine
from app.migrate import upgrade
from tests.conftest import CALLBACK_PATH, TABLES, TEST_TOKEN, rows
from tests.deploy_helpers import ServeProcess, metric
from tests.private_postgres import PrivatePostgres


def test_livez_and_readyz_answer(client: httpx.Client) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check()` is true; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.postgres
def test_readyz_follows_postgresql_down_and_up_without_a_restart(
    private_postgres_cluster: PrivatePostgres, tmp_path: Path
) -> None:
    cluster = private_postgres_cluster
    url = cluster.create_database("readyz")
    upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    env = {"DATABASE_URL": url, "CALLBACK_TOKEN": TEST_TOKEN, "LOG_FORMAT": "json"}
    with ServeProcess(tmp_path, env) as serve, httpx.Client(base_url=serve.url) as http:
        assert http.get("/readyz").status_code == 200
        cluster.stop()
        # Answered quickly (connection refused) or within the 2 s check timeout.
        wait_for(lambda: http.get("/readyz").status_code == 503, timeout=10)
        down = http.get("/readyz", headers={"X-Request-ID": "probe-while-down"})
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable"
        assert http.get("/livez").status_code == 200  # liveness checks nothing external
        scraped = http.get("/metrics")
        assert scraped.status_code == 200
        assert metric(scraped.text, "targetsms_database_up") == 0
        cluster.start()
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=15)
        assert metric(http.get("/metrics").text, "targetsms_database_up") == 1
    lines = [json.loads(line) for line in serve.logs().splitlines() if line.startswith("{")]
    # The warning written while handling the probe carries its request id.
    warnings = [line for line in lines if line["request_id"] == "probe-while-down"]
    assert any(
        w["level"] == "WARNING" and w["message"].startswith("not ready") for w in warnings
    ), warnings


@pytest.mark.postgres
def test_sigterm_answers_and_stores_the_callbacks_in_flight(
    postgres_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    env = {
        "DATABASE_URL": postgres_url,
        "CALLBACK_TOKEN": TEST_TOKEN,
        "WRITE_TIMEOUT_SECONDS": "60",
        "SHUTDOWN_TIMEOUT_SECONDS": "20",
        "SHUTDOWN_DELAY_SECONDS": "1",
    }
    ids = [f"55500{n}" for n in range(6)]
    answers: dict[str, httpx.Response] = {}

    def send(id_sms: str) -> None:
        body = f'<request><state id_sms="{id_sms}" time="2020-01-01 12:00:00">deliver</state>'
        answers[id_sms] = httpx.post(
            serve.url + CALLBACK_PATH, content=body + "</request>", timeout=60
        )

    with ServeProcess(tmp_path, env) as serve, psycopg.connect(postgres_url) as lock:
        # A slow database: the writer waits for the lock this transaction holds.
        lock.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        senders = [threading.Thread(target=send, args=(id_sms,)) for id_sms in ids]
        for sender in senders:
            sender.start()
        wait_for(lambda: lock_waiters(postgres_url) > 0, timeout=10)
        # Every request accepted (a connection still in the listen backlog at
        # SIGTERM is reset, not answered), then given time to reach the queue.
        assert serve.process is not None
        wait_for(lambda: accepted(serve.process.pid, serve.port) >= len(ids), timeout=10)
        time.sleep(0.5)
        serve.terminate()
        signalled = time.monotonic()
        # Shutdown has begun: not ready, while still serving for SHUTDOWN_DELAY_SECONDS.
        assert httpx.get(serve.url + "/readyz").json() == {"status": "shutting_down"}
        wait_for(lambda: refuses_connections(serve.url), timeout=10)
        assert all(sender.is_alive() for sender in senders)  # still waiting on the database
        lock.rollback()  # the database is back
        for sender in senders:
            sender.join(timeout=30)
        assert serve.process is not None
        serve.process.wait(timeout=25)
        exited_after = time.monotonic() - signalled
    for id_sms in ids:
        assert answers[id_sms].status_code == 200, serve.logs()
        assert f"<id_sms>{id_sms}</id_sms>" in answers[id_sms].text
    assert sorted(row[0] for row in rows_of(postgres_url)) == ids
    assert exited_after < 20 + 5
    assert "Traceback" not in serve.logs()


def lock_waiters(url: str) -> int:
    with psycopg.connect(url) as conn:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/livez", timeout=2)
    except httpx.ConnectError:
        return True
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # Connected as the listener closed: reset, which is a refusal too.
        return True
    return False


def accepted(pid: int, port: int) -> int:
    """Connections the server process has accepted on `port`."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in connections if c.laddr and c.laddr.port == port and c.raddr)


def rows_of(url: str) -> list[tuple[object, ...]]:
    engine = create_db_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        return rows(engine, "SELECT id_sms FROM messages")
    finally:
        engine.dispose()


def test_sigterm_ends_an_open_long_poll_at_once(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/poll.db",
        "CALLBACK_TOKEN": TEST_TOKEN,
        "API_KEYS": "read-key-1",
        "SHUTDOWN_TIMEOUT_SECONDS": "20",
    }
    answers: list[httpx.Response] = []

    def long_poll() -> None:
        answers.append(
            httpx.get(
                serve.url + "/api/v1/changes",
                params={"wait": "30"},
                headers={"Authorization": "Bearer read-key-1"},
                timeout=60,
            )
        )

    with ServeProcess(tmp_path, env) as serve:
        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(1)  # the poll is waiting
        assert poller.is_alive()
        serve.terminate()
        signalled = time.monotonic()
        poller.join(timeout=5)
        answered_after = time.monotonic() - signalled
        assert serve.process is not None
        serve.process.wait(timeout=20)
        exited_after = time.monotonic() - signalled
    assert answers, "the long poll got no answer"
    assert answers[0].status_code == 200
    assert answers[0].json()["items"] == []
    assert answered_after < 2
    assert exited_after < 5, serve.logs()
