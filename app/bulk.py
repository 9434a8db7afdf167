"""Writing many rows in one statement.

On PostgreSQL, one `unnest` of column arrays is one statement and one round
trip however many rows it carries, and skips SQLAlchemy's per-row parameter
processing. executemany (psycopg pipelines a statement per row) took 3x as
long for a group commit of 3,200 states, and an expanded `IN` list of 3,200
parameters cost more than the query it ran. Elsewhere (SQLite, in process)
plain executemany is already cheap.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Dialect,
    Table,
    bindparam,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

Row = dict[str, Any]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def one_of(column: Column[Any], values: Collection[Any], conn: Connection) -> ColumnElement[bool]:
    """`column IN values`, as one array parameter on PostgreSQL."""
    if is_postgres(conn):
        return column == bindparam(None, list(values), type_=ARRAY(column.type)).any_()
    return column.in_(sorted(values))


def insert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    if not rows:
        return
    names = list(rows[0])
    if not is_postgres(conn):
        placeholders = ", ".join("?" for _ in names)
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({placeholders})"  # noqa: S608
        conn.exec_driver_sql(sql, _tuples(conn, table, rows, names))
        return
    conn.execute(text(unnest_insert_sql(table, names, conn.dialect)), columns(rows, names))


def update_rows(conn: Connection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """Set each row's values on the row whose `key` column matches its `key`."""
    if not rows:
        return
    names = list(rows[0])
    if not is_postgres(conn):
        values = [name for name in names if name != key]
        assignments = ", ".join(f"{name} = ?" for name in values)
        sql = f"UPDATE {table.name} SET {assignments} WHERE {key} = ?"  # noqa: S608
        conn.exec_driver_sql(sql, _tuples(conn, table, rows, [*values, key]))
        return
    conn.execute(text(unnest_update_sql(table, key, names, conn.dialect)), columns(rows, names))


def _tuples(conn: Connection, table: Table, rows: Sequence[Row], names: list[str]) -> list[Any]:
    """The rows as driver parameters, each value through its column type's bind
    processor: what SQLAlchemy's executemany does, without its per-row work
    (two thirds of a 3,200-state group commit on SQLite)."""
    # dialect_impl: a TypeDecorator's own bind_processor stops at its generic
    # impl, and sqlite3 would then store datetimes in another text format.
    types = [table.c[name].type.dialect_impl(conn.dialect) for name in names]
    processors = [column_type.bind_processor(conn.dialect) for column_type in types]
    pairs = list(zip(names, processors, strict=True))
    return [tuple(row[n] if p is None else p(row[n]) for n, p in pairs) for row in rows]


def unnest_insert_sql(table: Table, names: list[str], dialect: Dialect, style: str = ":") -> str:
    """PostgreSQL: insert the rows given as one array parameter per column.

    `style` is the placeholder: ":" for SQLAlchemy's `text()`, "%" for psycopg
    (binary parameters).
    """
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
        f"SELECT * FROM unnest({_arrays(table, names, dialect, style)})"
    )


def unnest_update_sql(
    table: Table, key: str, names: list[str], dialect: Dialect, style: str = ":"
) -> str:
    assignments = ", ".join(f"{name} = v.{name}" for name in names if name != key)
    return (
        f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({_arrays(table, names, dialect, style)}) AS v({', '.join(names)}) "
        f"WHERE t.{key} = v.{key}"
    )


def _arrays(table: Table, names: list[str], dialect: Dialect, style: str) -> str:
    # psycopg's `%(name)b` sends the array in binary: its text format escapes
    # every element with a regular expression, 60% of a group commit's time.
    def placeholder(name: str) -> str:
        return f":{name}" if style == ":" else f"%({name})b"

    def array_type(name: str) -> str:
        return str(table.c[name].type.compile(dialect=dialect))

    return ", ".join(f"CAST({placeholder(name)} AS {array_type(name)}[])" for name in names)


def columns(rows: Sequence[Row], names: list[str]) -> Row:
    """The rows as one list per column, the parameters of the unnest statements."""
    return {name: [row[name] for row in rows] for name in names}
