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
    insert,
    text,
    update,
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
    if not is_postgres(conn):
        conn.execute(insert(table), rows)
        return
    names = list(rows[0])
    conn.execute(text(unnest_insert_sql(table, names, conn.dialect)), columns(rows, names))


def update_rows(conn: Connection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """Set each row's values on the row whose `key` column matches its `key`."""
    if not rows:
        return
    if not is_postgres(conn):
        statement = update(table).where(table.c[key] == bindparam(f"{key}_key"))
        values = [
            {n: v for n, v in row.items() if n != key} | {f"{key}_key": row[key]} for row in rows
        ]
        conn.execute(statement, values)
        return
    names = list(rows[0])
    conn.execute(text(unnest_update_sql(table, key, names, conn.dialect)), columns(rows, names))


def unnest_insert_sql(table: Table, names: list[str], dialect: Dialect, style: str = ":") -> str:
    """PostgreSQL: insert the rows given as one array parameter per column.

    `style` is the placeholder: ":" for SQLAlchemy's `text()`, "%" for psycopg.
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
    def placeholder(name: str) -> str:
        return f":{name}" if style == ":" else f"%({name})s"

    def array_type(name: str) -> str:
        return str(table.c[name].type.compile(dialect=dialect))

    return ", ".join(f"CAST({placeholder(name)} AS {array_type(name)}[])" for name in names)


def columns(rows: Sequence[Row], names: list[str]) -> Row:
    """The rows as one list per column, the parameters of the unnest statements."""
    return {name: [row[name] for row in rows] for name in names}
