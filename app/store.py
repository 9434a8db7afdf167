"""Getting a batch of states into the database: load, plan, write, commit.

Every write of states goes through here: the writer's group commits
(callbacks), the poller's answers, and reconciliation. Under the database-wide
write lock it loads what is stored for the batch's ids (the messages' STORED
columns and the (id_sms, status, time) keys already seen), lets
`ingest.plan_batch` decide what to write, and writes it. The rules live only in
`ingest`; how to write fastest on each database lives only here:

- PostgreSQL: psycopg's pipeline mode over the driver connection, so the
  writer's batch is two network round trips however many statements it holds
  (BEGIN, lock, loads and document ids, then one flush; every insert and
  update and COMMIT, then one sync). The thread path (`commit`) pays two more:
  psycopg syncs after the BEGIN it issues itself and in `commit()`. Rows
  travel as one binary array per column (`unnest`):
  psycopg's text format escaped every element with a regular expression, 60%
  of a group commit, and executemany pipelined a statement per row (3x as
  long for 3,200 states). Under load the writer had spent 81% of its time
  waiting on about ten round trips through SQLAlchemy. The writer runs the
  same statements from the event loop (`AsyncPostgresCommit`); the poller,
  tracking and reconciliation run them on their own threads (`commit`).
- SQLite: in process, so round trips cost nothing; inserts of up to 256 rows
  a statement (a multi-row VALUES, `ROWS_PER_INSERT`) and updates by
  executemany, of tuples already converted by each column's bind processor,
  skipping SQLAlchemy's per-row work (two thirds of a 3,200-state group
  commit). The conversion goes column by column, each distinct value once
  (`_sqlite_rows`).
  Inserting through `json_each` instead (one JSON document per table, rows
  built in SQLite's C) was slower: 8.5 against 5.6 us per event row with
  json.dumps included (bench/RESULTS.md, "Writer CPU per state"). Document
  ids are drawn under the write lock (max + 1) rather than returned by an
  INSERT ... RETURNING per batch. The batch's ids travel as one JSON
  array (`json_each`): an expanding `IN` of 3,200 parameters cost 12% of a
  group commit in SQLAlchemy's compiler alone. The writer's commits run in a
  process of their own (`sqlite_commit`), off the event loop's core.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain, islice
from operator import itemgetter
from typing import Any, cast

import psycopg
from sqlalchemy import Column, ColumnElement, Connection, Dialect, Engine, Table, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from app.db import WRITE_LOCK_KEY, postgres_connect_kwargs, write_transaction
from app.ingest import (
    DOCUMENT_COLUMNS,
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    NEW_MESSAGE_COLUMNS,
    STORED,
    Key,
    Outcome,
    Plan,
    Row,
    Submission,
    Values,
    batch_ids,
    documents_wanted,
    plan_batch,
    stored_current,
)
from app.models import Document, Event, Message
from app.protocol import IncomingState

MESSAGES = cast(Table, Message.__table__)
EVENTS = cast(Table, Event.__table__)
DOCUMENTS = cast(Table, Document.__table__)


class DataRefused(SQLAlchemyError):
    """The database refused a batch's data (a constraint, a value out of range):
    the fault of one submission in it, not of the database. A SQLAlchemyError
    like every other fault the store raises: the writer tells it apart, the
    poller and reconciliation fail the pass and try again later."""


def store_states(
    engine: Engine, states: Sequence[IncomingState], source: str, now: datetime | None = None
) -> Outcome:
    """Store and commit `states` (one source: "poll", "reconcile", ...) by the rules
    every state follows; the outcome says which ids are acknowledged and what was new."""
    now = now or datetime.now(UTC)
    (outcome,) = commit(engine, [Submission(states, source, now)], now)
    return outcome


def commit(engine: Engine, submissions: Sequence[Submission], now: datetime) -> list[Outcome]:
    """Store the batch in a write transaction of its own and commit it; raises
    with nothing stored on any failure: DataRefused for refused data, else
    SQLAlchemy's error for the fault, on either database."""
    with _refused_as_data():
        if _postgres(engine.dialect):
            return _commit_postgres(engine, submissions, now)
        with write_transaction(engine) as conn:
            return _store_sqlite(conn, submissions, now)


def store_batch(
    conn: Connection, submissions: Sequence[Submission], now: datetime
) -> list[Outcome]:
    """The same, inside the caller's `db.write_transaction`; the caller commits."""
    with _refused_as_data():
        if not _postgres(conn.dialect):
            return _store_sqlite(conn, submissions, now)
        raw = _driver(conn)
        with raw.pipeline():
            return _store_postgres(raw, conn.dialect, submissions, now, locked=True)


@contextmanager
def _refused_as_data() -> Iterator[None]:
    """Refused data as DataRefused; any other fault as SQLAlchemy's error for it."""
    try:
        with _sqlalchemy_errors():
            yield
    except (DataError, IntegrityError) as exc:
        raise DataRefused(first_line(exc)) from exc


@contextmanager
def _sqlalchemy_errors() -> Iterator[None]:
    """psycopg's errors, which the PostgreSQL path meets on the driver's own
    connection, as SQLAlchemy's (as `_sqlite_errors` does for sqlite3's):
    callers catch one kind, `except SQLAlchemyError`, on both databases."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc


def first_line(exc: Exception) -> str:
    """The error's type and first line: SQLAlchemy appends the statement and its
    parameters, which are never logged."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _postgres(dialect: Dialect) -> bool:
    return dialect.name == "postgresql"


# PostgreSQL ----------------------------------------------------------------

LOCK = "SELECT pg_advisory_xact_lock(%s)"


# One index probe per id, whatever the planner knows. With `id_sms = ANY(ids)`
# it chose a sequential scan of events on a table never analyzed (autovacuum is
# off on some servers, this machine's among them): even planned for the real
# parameters (see db.py), it put 16 ids at 8% of the rows. The scan grew with
# the table: 4 ms of every commit at 30,000 rows (bench/RESULTS.md, "Fourth
# pass"). OFFSET 0 keeps the subquery from being flattened into a join that
# the planner could again turn into a scan.
def _probe_each_id(table: str, columns: Sequence[str]) -> str:
    return (
        f"SELECT found.* FROM unnest(%b::varchar[]) AS ids(id_sms) CROSS JOIN LATERAL"  # noqa: S608
        f" (SELECT {', '.join(columns)} FROM {table}"
        f" WHERE {table}.id_sms = ids.id_sms OFFSET 0) AS found"
    )


LOAD_MESSAGES = _probe_each_id("messages", ["id_sms", *STORED])
LOAD_KEYS = _probe_each_id("events", ["id_sms", "status", "time_raw"])
NEXT_DOCUMENT_IDS = (
    "SELECT nextval(pg_get_serial_sequence('documents', 'id')) FROM generate_series(1, %s)"
)


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


def _commit_postgres(
    engine: Engine, submissions: Sequence[Submission], now: datetime
) -> list[Outcome]:
    with engine.connect() as conn:
        raw = _driver(conn)
        try:
            with raw.pipeline():
                outcomes = _store_postgres(raw, conn.dialect, submissions, now, locked=False)
                raw.commit()
            return outcomes
        except psycopg.OperationalError:
            # The writer's engine does not ping on checkout (a round trip per
            # batch); a connection that broke is dropped here instead.
            conn.invalidate()
            raise


def _store_postgres(
    raw: psycopg.Connection[Any],
    dialect: Dialect,
    submissions: Sequence[Submission],
    now: datetime,
    *,
    locked: bool,
) -> list[Outcome]:
    if not locked:
        raw.execute(LOCK, (WRITE_LOCK_KEY,))
    cursors = [raw.execute(sql, params) for sql, params in _postgres_loads(submissions)]
    loaded = [cursor.fetchall() for cursor in cursors]  # the pipeline's first sync
    writes, outcomes = _postgres_writes(dialect, submissions, now, loaded)
    for sql, params in writes:
        raw.execute(sql, params)
    return outcomes


class AsyncPostgresCommit:
    """`commit` on PostgreSQL for the writer, from the event loop, on a
    connection of its own (psycopg's AsyncConnection, in pipeline mode).

    With the commit on a thread, each of its network waits ended with the
    thread taking the GIL back from a busy event loop: py-spy found the writer
    thread 98% in `Connection.wait` under wrk, a 1-state group commit took
    7.5 ms for 16 documents, and that cycle, not the CPU, capped the requests
    a second. On the loop the waits cost nothing; only the planning's CPU
    remains. The statements and the plan are the thread path's own
    (`_postgres_loads`, `_postgres_writes`): only the I/O differs.
    """

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._connect_kwargs = postgres_connect_kwargs(engine)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def commit(self, submissions: Sequence[Submission], now: datetime) -> list[Outcome]:
        """As `commit`: stored and committed, or raises with nothing stored."""
        conn = self._conn
        if conn is None or conn.closed:
            with _sqlalchemy_errors():  # the database down: SQLAlchemy's error, as elsewhere
                conn = self._conn = await psycopg.AsyncConnection.connect(
                    **self._connect_kwargs, autocommit=True
                )
        try:
            with _refused_as_data():
                # BEGIN and COMMIT as statements on an autocommit connection:
                # psycopg's own (a transaction it opens, `commit()`) each wait
                # for a sync of their own, two more round trips through a busy
                # event loop (4 in all; a commit took 6.4 ms under wrk).
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    await conn.execute(LOCK, (WRITE_LOCK_KEY,))
                    loads = _postgres_loads(submissions)
                    cursors = [await conn.execute(sql, params) for sql, params in loads]
                    loaded = [await cursor.fetchall() for cursor in cursors]
                    writes, outcomes = _postgres_writes(self._dialect, submissions, now, loaded)
                    for sql, params in writes:
                        await conn.execute(sql, params)
                    await conn.execute("COMMIT")
            return outcomes
        except BaseException:
            await self._recover(conn)
            raise

    async def _recover(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a failed batch: roll back, or drop a connection that broke (the
        next batch connects anew)."""
        try:
            await conn.rollback()
        except psycopg.Error:
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _postgres_loads(submissions: Sequence[Submission]) -> list[tuple[str, Any]]:
    """What the plan needs: the messages and event keys stored for the batch's
    ids, and an id for each of its documents."""
    ids = batch_ids(submissions)
    return [
        (LOAD_MESSAGES, (ids,)),
        (LOAD_KEYS, (ids,)),
        (NEXT_DOCUMENT_IDS, (documents_wanted(submissions),)),
    ]


def _postgres_writes(
    dialect: Dialect,
    submissions: Sequence[Submission],
    now: datetime,
    loaded: list[list[Any]],
) -> tuple[list[tuple[str, Any]], list[Outcome]]:
    """The batch planned on what `_postgres_loads` found: its statements, and
    what each submission is answered."""
    messages, keys, allocated = loaded
    stored = {row[0]: stored_current(row[1:]) for row in messages}
    seen: set[Key] = {(row[0], row[1], row[2]) for row in keys}
    plan = plan_batch(stored, seen, submissions, now, iter([row[0] for row in allocated]))
    writes = []
    for write in _table_writes(plan):
        if write.key is None:
            sql = unnest_insert_sql(write.table, write.names, dialect, "%")
        else:
            sql = unnest_update_sql(write.table, write.key, write.names, dialect, "%")
        writes.append((sql, _arrays_of(write.names, write.rows)))
    return writes, plan.outcomes


def unnest_insert_sql(
    table: Table, names: Sequence[str], dialect: Dialect, style: str = ":"
) -> str:
    """PostgreSQL: insert the rows given as one array parameter per column.

    `style` is the placeholder: ":" for SQLAlchemy's `text()`, "%" for psycopg
    (binary parameters).
    """
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
        f"SELECT * FROM unnest({_arrays(table, names, dialect, style)})"
    )


def unnest_update_sql(
    table: Table, key: str, names: Sequence[str], dialect: Dialect, style: str = ":"
) -> str:
    assignments = ", ".join(f"{name} = v.{name}" for name in names if name != key)
    return (
        f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({_arrays(table, names, dialect, style)}) AS v({', '.join(names)}) "
        f"WHERE t.{key} = v.{key}"
    )


def _arrays(table: Table, names: Sequence[str], dialect: Dialect, style: str) -> str:
    return _array_casts(table, tuple(names), dialect, style)


# Compiling each column's type took a sixth of a PostgreSQL group commit's CPU;
# a batch's statements are one of a handful of shapes.
@lru_cache(maxsize=64)
def _array_casts(table: Table, names: tuple[str, ...], dialect: Dialect, style: str) -> str:
    # psycopg's `%(name)b` sends the array in binary.
    def placeholder(name: str) -> str:
        return f":{name}" if style == ":" else f"%({name})b"

    def array_type(name: str) -> str:
        return str(table.c[name].type.compile(dialect=dialect))

    return ", ".join(f"CAST({placeholder(name)} AS {array_type(name)}[])" for name in names)


def _arrays_of(names: Sequence[str], rows: Sequence[Values]) -> Row:
    """The parameters of the unnest statements: one list per column."""
    return {name: list(map(itemgetter(i), rows)) for i, name in enumerate(names)}


# SQLite --------------------------------------------------------------------

# Run on the driver's connection, like the writes: through SQLAlchemy (an
# execution context and a result object per statement) the three reads made a
# group commit of 16 one-state documents 8% dearer in instructions (callgrind).
BATCH_IDS = "(SELECT value FROM json_each(?))"
SQLITE_LOAD_MESSAGES = (
    f"SELECT id_sms, {', '.join(STORED)} FROM messages WHERE id_sms IN {BATCH_IDS}"  # noqa: S608
)
SQLITE_LOAD_KEYS = f"SELECT id_sms, status, time_raw FROM events WHERE id_sms IN {BATCH_IDS}"  # noqa: S608
SQLITE_MAX_DOCUMENT_ID = "SELECT coalesce(max(id), 0) FROM documents"


def _store_sqlite(
    conn: Connection, submissions: Sequence[Submission], now: datetime
) -> list[Outcome]:
    ids = (json.dumps(batch_ids(submissions)),)
    # Typed as SQLAlchemy would: each column's result processor turns the
    # stored text back into datetimes and booleans.
    processors = _result_processors(conn.dialect)

    def typed(values: Sequence[Any]) -> list[Any]:
        return [v if p is None else p(v) for p, v in zip(processors, values, strict=True)]

    stored = {
        row[0]: stored_current(typed(row[1:]))
        for row in _sqlite_execute(conn, SQLITE_LOAD_MESSAGES, ids)
    }
    seen: set[Key] = set(_sqlite_execute(conn, SQLITE_LOAD_KEYS, ids))
    wanted = documents_wanted(submissions)
    first = _sqlite_execute(conn, SQLITE_MAX_DOCUMENT_ID)[0][0] + 1 if wanted else 0
    plan = plan_batch(stored, seen, submissions, now, iter(range(first, first + wanted)))
    for write in _table_writes(plan):
        if write.key is None:
            _insert(conn, write.table, write.names, write.rows)
        else:
            _update(conn, write.table, write.key, write.names, write.rows)
    return plan.outcomes


# Both databases: the plan's rows, table by table ------------------------------


@dataclass(frozen=True, slots=True)
class TableWrite:
    table: Table
    names: Sequence[str]  # the columns of `rows`, in their order
    rows: Sequence[Values]
    key: str | None = None  # None: insert the rows; else update the rows matching on `key`


def _table_writes(plan: Plan) -> list[TableWrite]:
    writes = [
        TableWrite(DOCUMENTS, DOCUMENT_COLUMNS, plan.documents),
        TableWrite(MESSAGES, NEW_MESSAGE_COLUMNS, plan.new_messages),
        TableWrite(MESSAGES, MESSAGE_COLUMNS, plan.changed_messages, key="id_sms"),
        TableWrite(EVENTS, EVENT_COLUMNS, plan.events),
    ]
    return [write for write in writes if write.rows]


# Any database: a few rows through the same fastest way ---------------------


def one_of(column: Column[Any], values: Collection[Any], conn: Connection) -> ColumnElement[bool]:
    """`column IN values`, as one array parameter on PostgreSQL (an expanded `IN`
    list of 3,200 parameters cost more than the query it ran)."""
    if _postgres(conn.dialect):
        return column == bindparam(None, list(values), type_=ARRAY(column.type)).any_()
    return column.in_(sorted(values))


def insert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    if rows:
        names = list(rows[0])
        _insert(conn, table, names, _dict_rows(rows, names))


def update_rows(conn: Connection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """Set each row's values on the row whose `key` column matches its `key`."""
    if rows:
        names = list(rows[0])
        _update(conn, table, key, names, _dict_rows(rows, names))


def _dict_rows(rows: Sequence[Row], names: Sequence[str]) -> list[Values]:
    return [tuple(row[name] for name in names) for row in rows]


def _insert(conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Values]) -> None:
    if _postgres(conn.dialect):
        sql = unnest_insert_sql(table, names, conn.dialect, "%")
        with _sqlalchemy_errors():
            _driver(conn).execute(sql, _arrays_of(names, rows))
        return
    # A column NULL in every row is left out: sqlite3 binds a None only after
    # looking for an adapter for it, a fifth of a 32 x 100 commit's CPU. Left
    # out, it is NULL all the same: no column the store writes has a default
    # (a test checks the migrated schema).
    given = [name for i, name in enumerate(names) if any(row[i] is not None for row in rows)]
    values = _sqlite_rows(conn.dialect, table, names, rows, given)
    driver, left = _sqlite_driver(conn), len(rows)
    for size in ROWS_PER_INSERT:
        if left >= size:
            sql = _sqlite_insert_sql(table.name, tuple(given), size)
            with _sqlite_errors(conn, sql):
                for _ in range(left // size):
                    driver.execute(sql, list(chain.from_iterable(islice(values, size))))
            left %= size


# Rows per SQLite INSERT (multi-row VALUES): one statement, one step, for up
# to 256 rows, where executemany steps and resets once per row: 2.0-2.5 us a
# row against 3.2-3.6 for 3,200 rows into events. Powers of two: a batch of
# any size takes a few statements of at most nine shapes per column list,
# each prepared once and kept in sqlite3's statement cache. 256 rows of 11
# columns stay far below SQLite's limit on parameters (32,766).
ROWS_PER_INSERT = (256, 128, 64, 32, 16, 8, 4, 2, 1)


@lru_cache(maxsize=256)
def _sqlite_insert_sql(table: str, names: tuple[str, ...], rows: int) -> str:
    row = f"({', '.join('?' for _ in names)})"
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([row] * rows)}"  # noqa: S608


def _update(
    conn: Connection, table: Table, key: str, names: Sequence[str], rows: Sequence[Values]
) -> None:
    if _postgres(conn.dialect):
        sql = unnest_update_sql(table, key, names, conn.dialect, "%")
        with _sqlalchemy_errors():
            _driver(conn).execute(sql, _arrays_of(names, rows))
        return
    values = [name for name in names if name != key]
    assignments = ", ".join(f"{name} = ?" for name in values)
    sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = ?"  # noqa: S608
    _sqlite_executemany(conn, sql, _sqlite_rows(conn.dialect, table, names, rows, [*values, key]))


def _sqlite_executemany(conn: Connection, sql: str, rows: Iterator[Values]) -> None:
    """executemany on the driver's own connection, in the caller's transaction.

    Past SQLAlchemy's `exec_driver_sql`, which wants the rows as a list and
    sets up an execution context per statement: 3% of the instructions of a
    group commit of 32 x 100 states, 5% of one of 16 x 1 (callgrind). The rows
    stream from `zip`, which reuses its tuple once the driver lets go of it.
    """
    with _sqlite_errors(conn, sql):
        _sqlite_driver(conn).executemany(sql, rows)


def _sqlite_execute(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """The rows of one query on the driver's own connection, in the caller's transaction."""
    with _sqlite_errors(conn, sql):
        return _sqlite_driver(conn).execute(sql, params).fetchall()


def _sqlite_driver(conn: Connection) -> sqlite3.Connection:
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


@contextmanager
def _sqlite_errors(conn: Connection, sql: str) -> Iterator[None]:
    """sqlite3's errors as SQLAlchemy's, as every caller expects (DataRefused,
    the poller's and reconciliation's `except SQLAlchemyError`)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, dialect=conn.dialect) from exc


@lru_cache(maxsize=8)
def _result_processors(dialect: Dialect) -> list[Any]:
    """The STORED columns' result processors (None: the value as SQLite gives it)."""
    return [
        MESSAGES.c[name].type.dialect_impl(dialect).result_processor(dialect, None)
        for name in STORED
    ]


def _sqlite_rows(
    dialect: Dialect,
    table: Table,
    names: Sequence[str],
    rows: Sequence[Values],
    order: Sequence[str],
) -> Iterator[Values]:
    """The rows as driver parameters in the statement's `order`, each value
    through its column type's bind processor: what SQLAlchemy's executemany
    does, without its per-row work.

    Column by column: a batch's rows share most of their converted values (the
    received and updated times, the provider's time of a whole document, the
    flags), so each distinct value is converted once; the rest is lazy maps
    zipped back into rows in C, as the driver takes them. Row by row in Python
    this was 18% of a group commit of 3,200 states. Transposing the rows first
    (`zip(*rows)`, an iterator per row) made the garbage collector run nearly
    twice as often: 18 young collections per 32 x 100 group commit, against 10.
    """
    processors = _processors(table, tuple(order), dialect)
    columns = []
    for name, process in zip(order, processors, strict=True):
        value = itemgetter(names.index(name))
        if process is None:
            columns.append(map(value, rows))
        else:
            once = {v: process(v) for v in set(map(value, rows))}
            columns.append(map(once.__getitem__, map(value, rows)))
    return zip(*columns, strict=True)


@lru_cache(maxsize=64)
def _processors(table: Table, names: tuple[str, ...], dialect: Dialect) -> list[Any]:
    # dialect_impl: a TypeDecorator's own bind_processor stops at its generic
    # impl, and sqlite3 would then store datetimes in another text format.
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
