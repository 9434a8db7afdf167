"""The store: loading, planning and writing a batch, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import psycopg
import pytest
from sqlalchemy import Engine, Table, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from app.config import Settings
from app.db import create_db_engine, postgres_connect_kwargs, write_transaction
from app.ingest import DOCUMENT_COLUMNS, EVENT_COLUMNS, NEW_MESSAGE_COLUMNS, Submission
from app.models import Document, Event, Message
from app.protocol import IncomingState
from app.store import (
    LOAD_KEYS,
    LOAD_MESSAGES,
    AsyncPostgresCommit,
    DataRefused,
    commit,
    insert_rows,
    store_batch,
    store_states,
)
from tests.conftest import TEST_TOKEN, free_port, rows
from tests.test_ingest import state


def test_a_batch_dedupes_across_its_submissions(engine: Engine) -> None:
    now = datetime.now(UTC)
    first = Submission([state("send", id_sms="7"), state("deliver", 2, "7")], "callback", now, b"a")
    second = Submission([state("deliver", 2, "7"), state("send", id_sms="8")], "poll", now)
    with write_transaction(engine) as conn:
        outcomes = store_batch(conn, [first, second], now)
    assert [(o.acked_ids, o.stored, o.duplicates) for o in outcomes] == [
        (["7"], 2, 0),
        (["7", "8"], 1, 1),
    ]
    assert rows(engine, "SELECT id_sms, status, source FROM messages ORDER BY id_sms") == [
        ("7", "deliver", "callback"),
        ("8", "send", "poll"),
    ]
    assert rows(engine, "SELECT count(*) FROM documents") == [(1,)]
    doc_ids = rows(engine, "SELECT DISTINCT document_id FROM events ORDER BY document_id")
    assert len(doc_ids) == 2 and (None,) in doc_ids  # the poll's state has no document


def test_a_batch_updates_known_messages_and_inserts_new_ones(engine: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        store_batch(
            conn,
            [Submission([state("send", id_sms=str(n)) for n in range(50)], "callback", now)],
            now,
        )
    later = now + timedelta(seconds=5)
    final = [state("deliver", 1, str(n)) for n in range(0, 60, 2)]
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission(final, "callback", later)], later)
    statuses = dict(rows(engine, "SELECT id_sms, status FROM messages"))
    assert len(statuses) == 55  # 0..49, then 50..58 step 2 are new
    assert all(statuses[str(n)] == ("deliver" if n % 2 == 0 else "send") for n in range(50))
    assert all(statuses[str(n)] == "deliver" for n in range(50, 60, 2))
    assert rows(engine, "SELECT count(*) FROM messages WHERE updated_at > first_seen_at") == [(25,)]


def test_stored_times_compare_as_times(engine: Engine) -> None:
    """A range on a timestamp written by a batch finds it (on SQLite the text
    format must be SQLAlchemy's own, or comparisons go wrong)."""
    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("send", id_sms="5")], "callback", now)], now)
    with engine.connect() as conn:
        found = conn.execute(
            select(Message.id_sms).where(
                Message.updated_at >= now, Message.updated_at < now + timedelta(seconds=1)
            )
        ).all()
        stored_at = conn.execute(select(Message.updated_at)).scalar_one()
    assert [row.id_sms for row in found] == ["5"]
    assert stored_at == now


def test_a_final_status_clears_given_up_but_not_its_history(engine: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("send", id_sms="9")], "poll", now)], now)
        conn.execute(
            update(Message).values(given_up_at=now, last_given_up_at=now)  # as the poller does
        )
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("read", 5, "9")], "poll", now)], now)
    assert rows(engine, "SELECT given_up_at IS NOT NULL FROM messages") == [(True,)]
    with write_transaction(engine) as conn:
        store_batch(conn, [Submission([state("deliver", 9, "9")], "callback", now)], now)
    query = "SELECT final, given_up_at IS NULL, last_given_up_at IS NOT NULL FROM messages"
    assert rows(engine, query) == [(True, True, True)]


def test_store_states_is_the_one_call_for_a_list_of_states(engine: Engine) -> None:
    """The entry point for pollers and reconciliation: same rules as callbacks."""
    now = datetime.now(UTC)
    states = [state("send", id_sms="3"), state("deliver", 4, "3"), state("send", id_sms="3")]
    outcome = store_states(engine, states, "poll", now)
    assert (outcome.acked_ids, outcome.stored, outcome.duplicates) == (["3"], 2, 1)
    again = store_states(engine, [IncomingState("3", "read", "x", None, 2, "1.5")], "poll")
    assert (again.stored, again.conflicts) == (1, 0)
    found = rows(engine, "SELECT status, final, source, num_parts, price FROM messages")
    assert found == [("deliver", True, "poll", 2, "1.5")]


def test_a_value_given_by_only_some_states_of_a_batch_lands_on_theirs(engine: Engine) -> None:
    """SQLite leaves a column NULL in every row out of its INSERT: a batch where
    some states carry a price and parts and some do not keeps each as given."""
    now = datetime.now(UTC)
    bare = [IncomingState(str(n), "send", "", None) for n in range(3)]
    priced = IncomingState("9", "deliver", "t", now, 2, "0.5")
    commit(engine, [Submission(bare, "poll", now), Submission([priced], "poll", now)], now)
    query = "SELECT id_sms, num_parts, price, status_at IS NULL FROM {} ORDER BY id_sms"
    expected = [("0", None, None, True), ("1", None, None, True), ("2", None, None, True)]
    for table in ("messages", "events"):
        assert rows(engine, query.format(table)) == [*expected, ("9", 2, "0.5", False)]


def test_a_batch_of_any_size_is_stored_whole_and_in_order(engine: Engine) -> None:
    """SQLite inserts up to 256 rows a statement, in chunks of powers of two:
    300 states (256 + 32 + 8 + 4) and one of 1 all land, in the order sent."""
    now = datetime.now(UTC)
    ids = [str(5000 - n) for n in range(300)]  # not in sorted order
    big = Submission([state("send", id_sms=i) for i in ids], "callback", now, b"big")
    one = Submission([state("send", id_sms="7")], "callback", now, b"one")
    commit(engine, [big, one], now)
    stored = [row[0] for row in rows(engine, "SELECT id_sms FROM events ORDER BY id")]
    assert stored == [*ids, "7"]
    assert rows(engine, "SELECT count(*) FROM messages") == [(301,)]
    assert rows(engine, "SELECT count(*) FROM documents") == [(2,)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_column_the_store_inserts_has_a_default(engine: Engine) -> None:
    """Why leaving an all-NULL column out of SQLite's INSERT stores NULL."""
    inserted = {
        "documents": DOCUMENT_COLUMNS,
        "events": EVENT_COLUMNS,
        "messages": NEW_MESSAGE_COLUMNS,
    }
    schema = inspect(engine)
    for table, names in inserted.items():
        defaults = {c["name"]: c["default"] for c in schema.get_columns(table)}
        assert {name: defaults[name] for name in names} == dict.fromkeys(names), table


def test_times_at_the_ends_of_the_calendar_are_stored_and_read_back(engine: Engine) -> None:
    now = datetime.now(UTC)
    ends = [datetime(1, 1, 1, 12, tzinfo=UTC), datetime(9999, 12, 31, 11, 59, 59, tzinfo=UTC)]
    states = [IncomingState(str(n), "read", f"t{n}", at) for n, at in enumerate(ends)]
    commit(engine, [Submission(states, "callback", now, b"doc")], now)
    with engine.connect() as conn:
        found = conn.execute(select(Message.status_at).order_by(Message.id_sms)).scalars().all()
    assert found == ends


def test_rows_are_stored_exactly_as_sqlalchemy_stores_them(engine: Engine) -> None:
    """Each row the fast path writes (executemany of converted tuples on SQLite,
    arrays on PostgreSQL) holds, column by column and as the driver reads it
    back, what SQLAlchemy's own insert stores for the same values: on SQLite the
    text of times and the integers of flags are what every read relies on."""
    moscow = timezone(timedelta(hours=3))
    first = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=moscow)
    later = first + timedelta(minutes=7, microseconds=1)
    states = [
        IncomingState("101", "send", "", None),  # stays non-final: given_up_at written back
        IncomingState("102", "read", "2024-05-01 10:00:00", first, 2, "1.25"),
        IncomingState("103", "deliver", "2024-05-01 10:07:00", later),
    ]
    commit(engine, [Submission(states, "callback", first, b"<request/>", "10.0.0.1")], first)
    with engine.begin() as conn:  # as the poller gives up on a message
        conn.execute(update(Message).values(given_up_at=first, last_given_up_at=first))
    again = [
        IncomingState("101", "queued", "2024-05-01 10:08:00", later),  # an update, given up
        IncomingState("102", "not_deliver", "2024-05-01 10:09:00", later),  # final: cleared
        IncomingState("103", "expired", "2024-05-01 10:10:00", later),  # a conflict
        IncomingState("104", "deliver", "2024-05-01 10:11:00", later, 1, "0.5"),  # new
    ]
    commit(engine, [Submission(again, "poll", later)], later)
    for model in (Message, Event, Document):
        table = cast(Table, model.__table__)
        with engine.connect() as conn:
            stored = conn.execute(select(table).order_by(table.c.id)).mappings().all()
        assert stored
        for row in stored:
            # The same values again (a new id, and an id_sms of its own where it is
            # unique), through SQLAlchemy Core's insert.
            values = {k: v for k, v in row.items() if k != "id"}
            if "id_sms" in values:
                values["id_sms"] = f"9{row['id_sms']}"
            with engine.begin() as conn:
                (copy_id,) = conn.execute(insert(table).values(values)).inserted_primary_key
            fast, core = _raw_row(engine, table, row["id"]), _raw_row(engine, table, copy_id)
            if "id_sms" in values:
                assert (fast.pop("id_sms"), core.pop("id_sms")) == (row["id_sms"], values["id_sms"])
            assert fast == core, table.name


def _raw_row(engine: Engine, table: Table, row_id: object) -> dict[str, object]:
    """The row as the driver returns it (no SQLAlchemy type in between), without its id."""
    placeholder = "?" if engine.dialect.name == "sqlite" else "%s"
    sql = f"SELECT * FROM {table.name} WHERE id = {placeholder}"  # noqa: S608
    with engine.connect() as conn:
        (raw,) = conn.exec_driver_sql(sql, (row_id,)).mappings().all()
    return {name: value for name, value in raw.items() if name != "id"}


def test_refused_data_is_data_refused_and_nothing_is_stored(engine: Engine) -> None:
    """What the writer retries one submission at a time: a row the database
    refuses (here a missing NOT NULL source), on either database."""
    now = datetime.now(UTC)
    refused = Submission([state("send", id_sms="11")], None, now, b"doc")  # type: ignore[arg-type]
    with pytest.raises(DataRefused, match=r"(?i)not.?null"):
        commit(engine, [Submission([state("send", id_sms="10")], "poll", now), refused], now)
    assert rows(engine, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(engine, "SELECT count(*) FROM documents") == [(0,)]
    # The same through insert_rows (tracking, reconciliation): SQLAlchemy's own
    # error on both databases, though the rows go straight to the driver.
    row = {"id_sms": "12", "status": "send"}
    with pytest.raises(IntegrityError), write_transaction(engine) as conn:
        insert_rows(conn, cast(Table, Event.__table__), [row])


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_connection_lost_under_a_commit_is_sqlalchemy_s_error_and_the_next_reconnects(
    settings: Settings, engine: Engine
) -> None:
    """The PostgreSQL path talks to the driver's connection; a fault there must
    still reach the poller's and reconciliation's `except SQLAlchemyError`."""
    # As the writer's engine: no ping on checkout, so the dead connection is used.
    unpinged = create_db_engine(settings, pool_pre_ping=False, pool_size=1)
    try:
        now = datetime.now(UTC)
        store_states(unpinged, [state("send", id_sms="20")], "poll", now)
        with engine.connect() as conn:  # the server ends every other session
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(OperationalError) as raised:
            store_states(unpinged, [state("deliver", id_sms="20")], "poll", now)
        assert isinstance(raised.value.orig, psycopg.OperationalError)
        # The broken connection was dropped: the next batch connects anew.
        assert store_states(unpinged, [state("deliver", id_sms="20")], "poll", now).stored == 1
        assert rows(engine, "SELECT status FROM messages WHERE id_sms = '20'") == [("deliver",)]
    finally:
        unpinged.dispose()


def test_the_writer_s_postgres_connection_refused_is_sqlalchemy_s_error() -> None:
    """The event-loop commit connects on its own; a database that is not there
    answers as every other store fault does (a port nothing listens on)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
        callback_token=TEST_TOKEN,
    )
    engine = create_db_engine(settings)
    postgres = AsyncPostgresCommit(engine)
    now = datetime.now(UTC)
    with pytest.raises(OperationalError) as raised:
        asyncio.run(postgres.commit([Submission([state("send", id_sms="30")], "poll", now)], now))
    assert isinstance(raised.value.orig, psycopg.OperationalError)
    engine.dispose()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("load", [LOAD_MESSAGES, LOAD_KEYS], ids=["messages", "events"])
def test_the_loads_probe_the_index_on_a_table_never_analyzed(engine: Engine, load: str) -> None:
    """A group commit's loads look up a few ids in a large table: an index probe
    each, whatever the statistics say. On 30,000 rows never analyzed, events'
    `id_sms = ANY(ids)` of 16 ids was a sequential scan (messages' unique index
    kept it an index scan here, but under wrk it too was scanned while small)."""
    many = "FROM generate_series(1, 30000) AS g"
    with write_transaction(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO messages (id_sms, final, conflict, first_seen_at, updated_at)"
            f" SELECT g::text, true, false, now(), now() {many}"
        )
        conn.exec_driver_sql(
            "INSERT INTO events (id_sms, status, time_raw, source, conflict, received_at)"
            f" SELECT g::text, 'deliver', '2024', 'callback', false, now() {many}"
        )
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        ids = [f"new{n}" for n in range(16)]
        plan = driver.execute("EXPLAIN (FORMAT JSON) " + load, (ids,)).fetchone()[0]
    finally:
        raw.close()
    assert "Seq Scan" not in json.dumps(plan), plan


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_no_statement_is_jit_compiled(settings: Settings, engine: Engine) -> None:
    """On a table never analyzed the planner guesses many events per id_sms and
    costs a full group commit's key load past `jit_above_cost`: PostgreSQL then
    compiled it with LLVM on every commit, half the backend's time. Neither the
    engine's connections nor the writer's own may use JIT."""
    with write_transaction(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (id_sms, status, time_raw, source, conflict, received_at)"
            " SELECT g::text, 'deliver', '2024', 'callback', false, now()"
            " FROM generate_series(1, 30000) AS g"
        )
    ids = [f"new{n}" for n in range(settings.write_batch_max_states)]
    explain = "EXPLAIN (FORMAT JSON, COSTS) " + LOAD_KEYS
    with psycopg.connect(**postgres_connect_kwargs(engine)) as writers:
        assert writers.execute("SHOW jit").fetchone() == ("off",)
        plan = writers.execute(explain, (ids,)).fetchone()[0][0]
    # What made it matter: a cost past the threshold at which JIT would compile.
    assert plan["Plan"]["Total Cost"] > 100_000, plan
    assert "JIT" not in plan, plan
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        assert driver.execute("SHOW jit").fetchone() == ("off",)
    finally:
        raw.close()
