"""A storm of duplicates and disorder from 8 concurrent writers, on SQLite and PostgreSQL.

Phase one: 8 writers each send every state of every id (`send`, `read`, one
final status), shuffled, in documents of random size that may repeat a state.
Phase two, once all of them are done: the 8 writers send a second, different
final status for a quarter of the ids, mixed with more repeats. The first final
to commit wins, and phase one's is the only final before phase two, so the
expected end is fixed: one row per distinct state, every message at its phase
one final, the late finals kept as flagged conflicts. Every request must be
answered 200 with all its ids: no 5xx, no deadlock, no "cannot affect row a
second time". The service runs with two worker processes, so that two
writers also contend for the database itself.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import Engine

from app.config import Settings
from tests.conftest import CALLBACK_PATH, rows
from tests.faults.harness import FULL, SERVE, ServerProcess, acked_ids, state_document

WRITERS = 8
IDS = 3000 if FULL else 600
FINALS = ("deliver", "not_deliver", "expired", "partly_deliver")
State = tuple[str, str, str]


def make_states(rng: random.Random) -> tuple[list[State], list[State], dict[str, str]]:
    first, late, final = [], [], {}
    for n in range(IDS):
        id_sms = str(70_000_000_000 + n)
        final[id_sms] = rng.choice(FINALS)
        first += [
            (id_sms, "send", ""),
            (id_sms, "read", "2024-05-01 10:00:00"),
            (id_sms, final[id_sms], "2024-05-01 10:05:00"),
        ]
        if n % 4 == 0:
            other = rng.choice([f for f in FINALS if f != final[id_sms]])
            late.append((id_sms, other, "2024-05-01 11:00:00"))
    return first, late, final


def documents(states: list[State], rng: random.Random) -> list[list[State]]:
    shuffled = states[:]
    rng.shuffle(shuffled)
    docs, at = [], 0
    while at < len(shuffled):
        size = rng.randint(1, 25)
        doc = shuffled[at : at + size]
        doc += rng.sample(doc, k=rng.randint(0, min(3, len(doc))))  # repeats within a document
        rng.shuffle(doc)
        docs.append(doc)
        at += size
    return docs


def send_all(url: str, docs: list[list[State]]) -> list[str]:
    """Post each document; the problems seen (anything but a full acknowledgement)."""
    problems = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for doc in docs:
            response = client.post(CALLBACK_PATH, content=state_document(doc))
            expected = list(dict.fromkeys(state[0] for state in doc))
            if response.status_code != 200 or acked_ids(response.content) != expected:
                problems.append(f"{response.status_code}: {response.text[:200]}")
    return problems


def storm(url: str, states: list[State], rng: random.Random) -> list[str]:
    batches = [documents(states, random.Random(rng.random())) for _ in range(WRITERS)]
    with ThreadPoolExecutor(WRITERS) as pool:
        return [p for problems in pool.map(lambda d: send_all(url, d), batches) for p in problems]


def test_duplicate_storm_stores_each_state_once_with_the_right_final(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    rng = random.Random(6)
    first, late, final = make_states(rng)
    env = {"DATABASE_URL": settings.database_url}
    with ServerProcess(tmp_path, env, command=[*SERVE, "--workers", "2"]) as server:
        assert storm(server.url, first, rng) == []
        again = rng.sample(first, k=len(first) // 4)
        assert storm(server.url, late + again, rng) == []

    events = rows(engine, "SELECT id_sms, status, time_raw, conflict FROM events")
    assert len(events) == len(first) + len(late)
    assert {row[:3] for row in events} == set(first + late)
    assert {row[:3] for row in events if row[3]} == set(late)
    current = {
        row[0]: row[1:]
        for row in rows(engine, "SELECT id_sms, status, final, conflict FROM messages")
    }
    conflicted = {state[0] for state in late}
    expected = {i: (status, True, i in conflicted) for i, status in final.items()}
    assert {i: (s, bool(f), bool(c)) for i, (s, f, c) in current.items()} == expected
