"""SQLite's group commits, in a process of their own.

SQLite runs inside the process that calls it: its inserts, its B-tree work
and its fsync take CPU from whichever process holds the connection. In the
server's one process they took it from the event loop, which then served no
request (on its writer thread they waited for the GIL instead, 4-7 ms a
commit). Under wrk the process was CPU-bound on one core while the other
was idle; PostgreSQL does that work in a server process of its own, and
SQLite did not (bench/RESULTS.md, "Fifth pass").

So the writer hands each batch to a child process over a socket pair and
awaits its answer, as it awaits PostgreSQL's: the child runs `store.commit`,
the one path every write of states takes, and the event loop goes on
serving requests meanwhile. A request is still answered only after the
child reports the commit that holds its states.

The child is spawned on the first batch (`python -m app.sqlite_commit FD`)
and spawned anew after it dies: a batch in flight then fails like any
failed commit (503, nothing acknowledged; whether it landed or not, the
provider's retry is at worst a duplicate). It exits when the server closes
its end of the socket, or dies with it (the kernel closes that end too).
It ignores SIGINT and SIGTERM, which a terminal or a service manager may
send the whole group: the server decides when it stops, and it first
finishes the commits under way.

Each message is a 4-byte length and a pickle: (submissions, time) one way,
("ok", outcomes) or (kind, message) back. Pickle is safe here: both ends
are our own code, and nothing else can reach the socket pair.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import store
from app.db import sqlite_engine
from app.gc_tuning import freeze_startup_objects
from app.ingest import Outcome, Submission

LENGTH = struct.Struct("!I")
EXIT_WAIT_SECONDS = 10  # at close, for the child to exit before it is killed


class CommitFailed(SQLAlchemyError):
    """The child could not commit the batch (its message says why), or died.
    A SQLAlchemyError, like every fault `store.commit` raises."""


class SqliteCommitProcess:
    """`store.commit` on SQLite for the writer, in a child process, awaited
    from the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._url = engine.url.render_as_string(hide_password=False)
        self._child: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def commit(self, submissions: Sequence[Submission], now: datetime) -> list[Outcome]:
        """As `store.commit`: stored and committed, or raises with nothing
        acknowledged (`store.DataRefused` for refused data, else CommitFailed)."""
        try:
            if self._writer is None:
                await self._spawn()
            assert self._reader is not None and self._writer is not None
            self._writer.write(_frame((list(submissions), now)))
            await self._writer.drain()
            kind, value = await _receive_async(self._reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            code = await self._reap()
            raise CommitFailed(f"no answer from the commit process (exit code {code})") from exc
        except BaseException:
            # Cancelled between a question and its answer: the stream is out
            # of step, so this child is done with.
            self._abandon()
            raise
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        raise (store.DataRefused if kind == "refused" else CommitFailed)(value)

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            # The server's own module path, and not the working directory
            # (-P): the child imports the very code the server runs.
            self._child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",
                "-m",
                __name__,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        # The URL travels here, not in the command line that `ps` shows.
        self._writer.write(_frame(self._url))

    def _forget(self) -> asyncio.subprocess.Process | None:
        """Close our end of the socket and forget the child (the next batch
        spawns another); the child, for the caller to end."""
        child, writer = self._child, self._writer
        self._child = self._reader = self._writer = None
        if writer is not None:
            writer.close()
        return child

    def _abandon(self) -> asyncio.subprocess.Process | None:
        child = self._forget()
        if child is not None and child.returncode is None:
            child.kill()
        return child

    async def _reap(self) -> int | None:
        child = self._abandon()
        return None if child is None else await child.wait()

    async def close(self) -> None:
        """Let the child exit, as it does once its socket closes."""
        child = self._forget()
        if child is not None:
            try:
                await asyncio.wait_for(child.wait(), EXIT_WAIT_SECONDS)
            except TimeoutError:
                child.kill()
                await child.wait()


def _frame(value: Any) -> bytes:
    payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(payload)) + payload


async def _receive_async(reader: asyncio.StreamReader) -> Any:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return pickle.loads(await reader.readexactly(length))  # noqa: S301 (our own child)


# The child ----------------------------------------------------------------


def _receive(stream: Any) -> Any:
    header = stream.read(LENGTH.size)
    if len(header) < LENGTH.size:
        raise EOFError
    (length,) = LENGTH.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        raise EOFError
    return pickle.loads(payload)  # noqa: S301 (our own server)


def serve(fd: int) -> None:
    """Commit each batch the server sends, until it closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as stream:
        try:
            engine = sqlite_engine(_receive(stream), pool_size=1)
        except EOFError:
            return
        freeze_startup_objects()  # as the server does: see gc_tuning
        while True:
            try:
                submissions, now = _receive(stream)
            except EOFError:
                break
            try:
                answer: tuple[str, Any] = ("ok", store.commit(engine, submissions, now))
            except store.DataRefused as exc:
                answer = ("refused", str(exc))
            except Exception as exc:  # as the writer's own: any failure is a 503, not a crash
                answer = ("failed", store.first_line(exc))
            sock.sendall(_frame(answer))
        engine.dispose()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
