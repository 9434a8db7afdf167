"""Engines, and the one way to open a write transaction.

Every write (callbacks, polls, tracking) goes through `write_transaction`, which
serialises writers database-wide: SQLite by `BEGIN IMMEDIATE`, PostgreSQL by a
transaction-scoped advisory lock. Serialised writers give two guarantees the
rest of the code leans on:

- no deadlocks and no lost updates between concurrent batches;
- `events.id` is assigned in commit order, so the change feed (`id > cursor`)
  can never see a row appear behind a cursor it has already handed out.
  (PostgreSQL makes a commit visible before it releases the transaction's
  locks, so the next writer's ids are always read after this one's.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from app.config import Settings

# Any fixed 64-bit number works; this one spells "tsmsrcv1".
WRITE_LOCK_KEY = 0x74736D7372637631

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_THREADS = 40  # anyio's default thread limit, which runs FastAPI's sync endpoints


def create_db_engine(settings: Settings, **kwargs: Any) -> Engine:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return sqlite_engine(url.render_as_string(hide_password=False), **kwargs)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    # In the URL rather than connect_args, so that the writer's own connection
    # (`postgres_connect_kwargs`) connects exactly as the engine does.
    url = url.update_query_dict(
        {
            "connect_timeout": str(settings.db_connect_timeout_seconds),
            # psycopg prepares a statement after 5 runs, and PostgreSQL may then
            # keep a generic plan chosen while the tables were nearly empty: a
            # sequential scan for `id_sms = ANY(:ids)`, which turned a 0.1 s group
            # commit into 4 s once the tables grew. Plan for the real parameters.
            # And no JIT: on tables never analyzed the planner guessed 297 events
            # per id_sms, costed the group commit's key load at 1.5 million, and
            # compiled it with LLVM on every commit: 48% of the PostgreSQL
            # backend's time at 100-state documents (bench/RESULTS.md, "Sixth
            # pass"). Every statement here is short; none repays a compile.
            "options": "-c plan_cache_mode=force_custom_plan -c jit=off",
        }
    )
    kwargs.setdefault("pool_pre_ping", True)
    # Room for every thread of the request threadpool (40) that reads at once.
    kwargs.setdefault("pool_size", settings.db_pool_size)
    kwargs.setdefault("max_overflow", max(0, READ_THREADS - settings.db_pool_size))
    return create_engine(url, pool_timeout=settings.db_connect_timeout_seconds, **kwargs)


def postgres_connect_kwargs(engine: Engine) -> dict[str, Any]:
    """What psycopg needs to connect as `engine` does (host, credentials, the
    timeout and options above), for a connection of our own outside its pool."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs.pop("context", None)  # SQLAlchemy's adapters: our statements need psycopg's own
    return dict(kwargs)


def sqlite_engine(url: str, **kwargs: Any) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

    # pysqlite's own transaction handling emits a deferred BEGIN lazily, which
    # breaks savepoints and turns a read-then-write into an immediate "database
    # is locked". SQLAlchemy's documented recipe: switch it off, BEGIN ourselves.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database-wide write lock until it ends."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(sqlite_immediate=True)
        with conn.begin():  # SQLite: BEGIN IMMEDIATE takes the lock
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
            yield conn
