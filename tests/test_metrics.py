"""`/metrics`: the counters move as callbacks arrive, and hold no secret."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.conftest import CALLBACK_PATH, TEST_TOKEN
from tests.deploy_helpers import metric

ID_A, ID_B, ID_C, ID_PENDING = "918273645500", "918273645501", "918273645502", "918273645503"


def push(*states: str) -> bytes:
    return f"<request>{''.join(states)}</request>".encode()


def state(id_sms: str, status: str, time: str = "2020-01-01 12:00:00") -> str:
    return f'<state id_sms="{id_sms}" time="{time}">{status}</state>'


def scrape(http: httpx.Client) -> str:
    answer = http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_counters_move_as_callbacks_arrive(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    before = scrape(client)
    started = time.time()
    first = push(state(ID_A, "deliver"), state(ID_B, "send", ""))
    assert client.post(CALLBACK_PATH, content=first).status_code == 200
    assert client.post(CALLBACK_PATH, content=first).status_code == 200  # both duplicates
    conflict = push(state(ID_A, "not_deliver"), state("bad-id", "deliver"))
    assert client.post(CALLBACK_PATH, content=conflict).status_code == 200
    assert client.post(CALLBACK_PATH, content=b"<bad").status_code == 400
    assert client.post("/callbacks/targetsms/wrong", content=first).status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("targetsms_callback_states_total", outcome="stored") == 2
    assert moved("targetsms_callback_states_total", outcome="duplicate") == 2
    assert moved("targetsms_callback_states_total", outcome="conflict") == 1
    assert moved("targetsms_callback_states_total", outcome="rejected") == 1
    assert moved("targetsms_acked_ids_total") == 5
    assert moved("targetsms_callback_parse_errors_total") == 1
    assert moved("targetsms_callback_requests_total", code="200") == 3
    assert moved("targetsms_callback_requests_total", code="400") == 1
    assert moved("targetsms_callback_requests_total", code="404") == 1
    assert moved("targetsms_db_commit_seconds_count") >= 1
    # From the database: ID_B is still `send`.
    assert metric(after, "targetsms_database_up") == 1
    assert metric(after, "targetsms_pending_messages") == 1
    last = metric(after, "targetsms_last_callback_timestamp_seconds")
    assert started - 1 <= last <= time.time() + 1

    # Server-side records only. (pytest hangs its capture handler on every
    # non-propagating logger, which wakes uvicorn's own access log: `serve`
    # keeps it off, as tests/test_logs.py checks.)
    client_side = ("httpx", "httpcore", "uvicorn.access")
    server_side = [r for r in caplog.records if not r.name.startswith(client_side)]
    logged = "\n".join(record.getMessage() for record in server_side)
    for secret in (TEST_TOKEN, "read-key-1", "admin-key-1"):
        assert secret not in after
        assert secret not in logged
    for id_sms in (ID_A, ID_B):
        assert id_sms not in after


def test_backlog_leaves_out_final_and_given_up_messages(
    client: httpx.Client, engine: Engine
) -> None:
    document = push(state(ID_A, "send", ""), state(ID_B, "send", ""), state(ID_C, "expired"))
    assert client.post(CALLBACK_PATH, content=document).status_code == 200
    assert metric(scrape(client), "targetsms_pending_messages") == 2
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE messages SET given_up_at = updated_at WHERE id_sms = :id"), {"id": ID_B}
        )
    assert metric(scrape(client), "targetsms_pending_messages") == 1
