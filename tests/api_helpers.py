"""Shared set-up for the read API tests: callback documents and bulk storage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, insert

from app.config import Settings
from app.db import write_transaction
from app.ingest import Submission
from app.models import Message
from app.protocol import IncomingState, parse_time
from app.store import store_batch
from tests.conftest import CALLBACK_PATH

READ = {"Authorization": "Bearer read-key-2"}
ADMIN = {"Authorization": "Bearer admin-key-1"}

State = tuple[str, str, str]  # id_sms, status, provider time


def doc(*states: State) -> bytes:
    body = "".join(f'<state id_sms="{i}" time="{t}">{s}</state>' for i, s, t in states)
    return f"<request>{body}</request>".encode()


def push(client: httpx.Client, *states: State) -> None:
    """POST one callback document and check that every id was acknowledged."""
    response = client.post(CALLBACK_PATH, content=doc(*states))
    assert response.status_code == 200, response.text
    for id_sms, _, _ in states:
        assert f"<id_sms>{id_sms}</id_sms>" in response.text


def store(
    engine: Engine,
    settings: Settings,
    states: Iterable[State],
    now: datetime | None = None,
    body: bytes | None = None,
) -> None:
    """Store states directly, as another writer process would."""
    when = now or datetime.now(UTC)
    incoming = [IncomingState(i, s, t, parse_time(t, settings.zone)) for i, s, t in states]
    submission = Submission(incoming, "callback", received_at=when, body=body)
    with write_transaction(engine) as conn:
        store_batch(conn, [submission], when)


def track(engine: Engine, id_sms: str, now: datetime, given_up: bool = False) -> None:
    """A message registered for polling that has no state yet."""
    row = {
        "id_sms": id_sms,
        "first_seen_at": now,
        "updated_at": now,
        "tracked_at": now,
        "given_up_at": now if given_up else None,
    }
    with write_transaction(engine) as conn:
        conn.execute(insert(Message), [row])


def get(client: httpx.Client, path: str, **params: object) -> dict[str, object]:
    response = client.get(path, params=params, headers=READ)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body
