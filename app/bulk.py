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

from sqlalchemy import Column, ColumnElement, Connection, Table, bindparam, insert, text, update
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
    # Names come from our own Table objects, never from input.
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
        f"SELECT * FROM unnest({_arrays(conn, table, names)})"
    )
    conn.execute(text(sql), _columns(rows, names))


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
    assignments = ", ".join(f"{name} = v.{name}" for name in names if name != key)
    sql = (
        f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608
        f"FROM unnest({_arrays(conn, table, names)}) AS v({', '.join(names)}) "
        f"WHERE t.{key} = v.{key}"
    )
    conn.execute(text(sql), _columns(rows, names))


def _arrays(conn: Connection, table: Table, names: list[str]) -> str:
    def array_type(name: str) -> str:
        return str(table.c[name].type.compile(dialect=conn.dialect))

    return ", ".join(f"CAST(:{name} AS {array_type(name)}[])" for name in names)


def _columns(rows: Sequence[Row], names: list[str]) -> Row:
    return {name: [row[name] for row in rows] for name in names}
