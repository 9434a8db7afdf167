"""`GET /api/v1/changes`: the change feed, its cursors, its long poll, and the
guarantee that a reader following it sees every state exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, insert

from app.config import Settings
from app.cursors import CHANGES, encode
from app.db import create_db_engine, write_transaction
from app.ingest import Submission
from app.models import Event
from app.protocol import IncomingState
from app.store import store_batch
from tests.api_helpers import READ, doc, get, push, store
from tests.conftest import CALLBACK_PATH, TABLES, TEST_TOKEN, LiveServer, rows

Seen = tuple[str, str, str]


def follow(client: httpx.Client, after: str | None, limit: int = 100) -> tuple[list[Seen], str]:
    """Read the feed from `after` to its current end."""
    seen: list[Seen] = []
    while True:
        params: dict[str, object] = {"limit": limit} | ({"after": after} if after else {})
        page = get(client, "/api/v1/changes", **params)
        items = page["items"]
        assert isinstance(items, list)
        seen += [(item["id_sms"], item["status"], item["time_raw"]) for item in items]
        after = str(page["next_cursor"])
        if not items:
            return seen, after


def stored(engine: Engine) -> list[Seen]:
    query = "SELECT id_sms, status, time_raw FROM events ORDER BY id"
    return [(str(a), str(b), str(c)) for a, b, c in rows(engine, query)]


def test_the_feed_lists_every_state_in_order_with_cursors(
    client: httpx.Client, engine: Engine
) -> None:
    push(client, ("1", "send", ""), ("2", "send", ""))
    push(client, ("1", "deliver", "2020-01-01 12:57:46"), ("2", "send", ""))

    page = get(client, "/api/v1/changes")

    items = page["items"]
    assert isinstance(items, list)
    assert [(i["id_sms"], i["status"]) for i in items] == [
        ("1", "send"),
        ("2", "send"),
        ("1", "deliver"),
    ]
    ids = [row[0] for row in rows(engine, "SELECT id FROM events ORDER BY id")]
    assert [i["cursor"] for i in items] == [encode(CHANGES, int(str(n))) for n in ids]
    assert page["next_cursor"] == items[-1]["cursor"]
    last = items[-1]
    assert last["time_raw"] == "2020-01-01 12:57:46"
    assert last["status_at"] == "2020-01-01T09:57:46Z"
    assert (last["source"], last["conflict"], last["num_parts"], last["price"]) == (
        "callback",
        False,
        None,
        None,
    )
    assert set(last) == {
        "cursor",
        "id_sms",
        "status",
        "time_raw",
        "status_at",
        "source",
        "conflict",
        "received_at",
        "num_parts",
        "price",
    }


def test_resuming_from_a_cursor_sees_only_what_is_new(client: httpx.Client) -> None:
    empty = get(client, "/api/v1/changes")
    assert empty["items"] == []
    start = str(empty["next_cursor"])  # storable even before anything was stored

    push(client, ("1", "send", ""))
    seen, cursor = follow(client, start, limit=1)
    assert seen == [("1", "send", "")]

    nothing = get(client, "/api/v1/changes", after=cursor)
    assert nothing == {"items": [], "next_cursor": cursor}

    push(client, ("2", "send", ""), ("3", "send", ""), ("1", "expired", "x"))
    seen, _ = follow(client, cursor, limit=2)
    assert seen == [("2", "send", ""), ("3", "send", ""), ("1", "expired", "x")]


def test_bad_feed_parameters_are_422(client: httpx.Client) -> None:
    list_cursor = encode("m", 1)
    cases = {
        "invalid_cursor": [{"after": "abc"}, {"after": list_cursor}, {"after": "djE6Yzox="}],
        "invalid_parameters": [{"limit": 0}, {"limit": 1001}, {"wait": -1}, {"wait": 31}],
    }
    for code, params_list in cases.items():
        for params in params_list:
            response = client.get("/api/v1/changes", params=params, headers=READ)
            assert response.status_code == 422, params
            assert response.json()["error"] == code, params


def test_wait_returns_as_soon_as_a_state_arrives(client: httpx.Client) -> None:
    cursor = str(get(client, "/api/v1/changes")["next_cursor"])
    timer = threading.Timer(0.3, push, args=(client, ("1", "send", "")))
    started = time.monotonic()
    timer.start()
    try:
        page = get(client, "/api/v1/changes", after=cursor, wait=20)
    finally:
        timer.join()
    assert [item["id_sms"] for item in page["items"]] == ["1"]  # type: ignore[attr-defined]
    assert time.monotonic() - started < 20


def test_wait_with_nothing_new_answers_empty_when_it_ends(client: httpx.Client) -> None:
    cursor = str(get(client, "/api/v1/changes")["next_cursor"])
    started = time.monotonic()
    page = get(client, "/api/v1/changes", after=cursor, wait=1)
    assert page == {"items": [], "next_cursor": cursor}
    assert time.monotonic() - started >= 1


def test_wait_sees_states_stored_by_another_process(
    client: httpx.Client, engine: Engine, settings: Settings
) -> None:
    # No commit of this server's writer wakes the request: only the re-check does.
    cursor = str(get(client, "/api/v1/changes")["next_cursor"])
    timer = threading.Timer(0.3, store, args=(engine, settings, [("8", "send", "")]))
    timer.start()
    try:
        page = get(client, "/api/v1/changes", after=cursor, wait=20)
    finally:
        timer.join()
    assert [item["id_sms"] for item in page["items"]] == ["8"]  # type: ignore[attr-defined]


def test_waiting_requests_hold_no_worker_thread(server: LiveServer) -> None:
    # More waiters than the threadpool has threads (40): if each held one,
    # the lookup below would queue until the waits ended.
    async def scenario() -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            first = await http.get("/api/v1/changes", headers=READ)
            cursor = first.json()["next_cursor"]
            params = {"after": cursor, "wait": 25}
            waiters = [
                asyncio.create_task(http.get("/api/v1/changes", params=params, headers=READ))
                for _ in range(45)
            ]
            await asyncio.sleep(0.5)
            lookup = await http.get("/api/v1/messages/1", headers=READ)
            assert lookup.status_code == 404
            assert not any(waiter.done() for waiter in waiters)
            ack = await http.post(CALLBACK_PATH, content=doc(("1", "send", "")))
            assert ack.status_code == 200
            answers = await asyncio.gather(*waiters)
            assert all([i["id_sms"] for i in a.json()["items"]] == ["1"] for a in answers)

    asyncio.run(scenario())


def _submission(id_sms: str) -> Submission:
    state = IncomingState(id_sms, "send", "", None)
    return Submission([state], "callback", received_at=datetime.now(UTC))


def test_a_writer_draws_ids_only_after_the_previous_commit_is_visible(
    client: httpx.Client, engine: Engine
) -> None:
    """The mechanism: while one write transaction is open, a second one cannot
    store anything, so the feed cannot show the second's state first."""
    first_stored, release = threading.Event(), threading.Event()
    second_done = threading.Event()

    def first_writer() -> None:
        with write_transaction(engine) as conn:
            store_batch(conn, [_submission("1")], datetime.now(UTC))
            first_stored.set()
            release.wait(10)

    def second_writer() -> None:
        with write_transaction(engine) as conn:
            store_batch(conn, [_submission("2")], datetime.now(UTC))
        second_done.set()

    threads = [threading.Thread(target=first_writer), threading.Thread(target=second_writer)]
    threads[0].start()
    assert first_stored.wait(10)
    threads[1].start()
    try:
        time.sleep(0.5)
        assert not second_done.is_set()
        assert get(client, "/api/v1/changes")["items"] == []
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    assert second_done.is_set()
    assert follow(client, None)[0] == [("1", "send", ""), ("2", "send", "")]


@pytest.mark.postgres
def test_without_the_write_lock_a_reader_would_skip_a_state(postgres_settings: Settings) -> None:
    """Negative control: plain transactions commit out of id order, and a reader
    that went past the later id never sees the earlier one. This is the gap the
    write lock prevents; the concurrent test below would catch it."""
    row = {"status": "send", "time_raw": "", "source": "callback"}
    now = datetime.now(UTC)
    engine = create_db_engine(postgres_settings)
    with (
        LiveServer(postgres_settings) as server,
        httpx.Client(base_url=server.url) as client,
        engine.connect() as slow,
        engine.connect() as fast,
    ):
        slow.begin()
        slow.execute(insert(Event), [row | {"id_sms": "1", "received_at": now}])  # draws id 1
        with fast.begin():
            fast.execute(insert(Event), [row | {"id_sms": "2", "received_at": now}])  # id 2
        seen, cursor = follow(client, None)
        slow.commit()
        assert seen == [("2", "send", "")]
        assert follow(client, cursor)[0] == []  # id 1 is stored but behind the cursor
    assert stored(engine) == [("1", "send", ""), ("2", "send", "")]
    engine.dispose()


@pytest.fixture
def postgres_settings(postgres_url: str) -> Settings:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=postgres_url,
        callback_token=TEST_TOKEN,
        api_keys="read-key-1,read-key-2",
    )


@pytest.mark.postgres
def test_a_reader_sees_every_state_once_under_concurrent_writers(
    postgres_settings: Settings,
) -> None:
    """Two server instances' writers (group commits of concurrent POSTs, each on
    its own connections) and a direct writer all store at once; a reader
    follows with small pages."""
    settings = postgres_settings
    with LiveServer(settings) as server, LiveServer(settings) as second_server:
        engine = create_db_engine(settings)
        try:
            _concurrent_writers_and_a_reader(server, second_server, engine, settings)
        finally:
            engine.dispose()


def _concurrent_writers_and_a_reader(
    server: LiveServer, second_server: LiveServer, engine: Engine, settings: Settings
) -> None:
    errors: list[BaseException] = []

    def post_callbacks(url: str, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            for n in range(40):
                states = [(f"{worker}{n:03d}{k}", "send", "") for k in range(1 + n % 5)]
                push(http, *states, (f"{worker}{n:03d}0", "deliver", f"t{n}"))

    def store_directly() -> None:
        for n in range(40):
            store(engine, settings, [(f"9{n:03d}{k}", "send", "") for k in range(20)])

    def run(target: object, *args: object) -> None:
        try:
            target(*args)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(post_callbacks, url, worker))
        for worker, url in enumerate(
            [server.url, server.url, second_server.url, second_server.url], 1
        )
    ] + [threading.Thread(target=run, args=(store_directly,))]
    for thread in threads:
        thread.start()

    seen: list[Seen] = []
    cursor: str | None = None
    reads_during_writes = 0
    with httpx.Client(base_url=server.url, timeout=30) as reader:
        while True:
            finished = all(not thread.is_alive() for thread in threads)
            params = {"limit": 7} | ({"after": cursor} if cursor else {})
            page = get(reader, "/api/v1/changes", **params)
            items = page["items"]
            assert isinstance(items, list)
            seen += [(item["id_sms"], item["status"], item["time_raw"]) for item in items]
            cursor = str(page["next_cursor"])
            reads_during_writes += bool(items) and not finished
            if finished and not items:  # read to the end after every writer had stopped
                break
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert reads_during_writes > 3  # the reader really did follow while writes went on
    assert len(seen) == len(set(seen))
    assert seen == stored(engine)
    assert len(seen) == 4 * sum(1 + n % 5 + 1 for n in range(40)) + 40 * 20
