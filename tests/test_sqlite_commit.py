"""SQLite's commit process: its life beside the writer, and beside a killed server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.sqlite_commit import EXIT_WAIT_SECONDS
from app.writer import StorageUnavailable, Writer
from tests.conftest import CALLBACK_PATH, rows
from tests.faults.harness import ServerProcess
from tests.test_writer import submission

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def commit_processes(parent: int) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(parent).children()
        if "app.sqlite_commit" in child.cmdline()
    ]


def with_writer(engine: Engine, scenario: Callable[[Writer], Awaitable[None]]) -> float:
    """Run `scenario` with a started writer; the seconds its stop then took."""

    async def run() -> float:
        writer = Writer(engine, max_batch_states=1000, timeout=30)
        writer.start()
        try:
            await scenario(writer)
        finally:
            started = time.monotonic()
            await writer.stop()
        return time.monotonic() - started

    return asyncio.run(run())


@SQLITE
def test_a_killed_commit_process_fails_its_batch_and_the_next_gets_a_new_one(
    engine: Engine,
) -> None:
    pids = []

    async def scenario(writer: Writer) -> None:
        assert (await writer.submit(submission("1", b"a"))).acked_ids == ["1"]
        (child,) = commit_processes(os.getpid())
        pids.append(child.pid)
        child.kill()
        child.wait(5)
        with pytest.raises(StorageUnavailable):
            await writer.submit(submission("2", b"b"))
        assert (await writer.submit(submission("3", b"c"))).acked_ids == ["3"]
        pids.extend(child.pid for child in commit_processes(os.getpid()))

    with_writer(engine, scenario)
    assert len(pids) == 2 and pids[0] != pids[1]
    assert rows(engine, "SELECT id_sms FROM events ORDER BY id_sms") == [("1",), ("3",)]


@SQLITE
def test_a_failed_commit_is_a_503_and_the_process_lives_on(engine: Engine) -> None:
    """The database fails the statement (a table gone): the process answers
    the failure and takes the next batch itself."""
    pids = []

    async def scenario(writer: Writer) -> None:
        assert (await writer.submit(submission("1", b"a"))).acked_ids == ["1"]
        pids.extend(child.pid for child in commit_processes(os.getpid()))
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE events RENAME TO events_away"))
        with pytest.raises(StorageUnavailable):
            await writer.submit(submission("2", b"b"))
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        assert (await writer.submit(submission("3", b"c"))).acked_ids == ["3"]
        pids.extend(child.pid for child in commit_processes(os.getpid()))

    with_writer(engine, scenario)
    assert len(pids) == 2 and pids[0] == pids[1]
    assert rows(engine, "SELECT id_sms FROM events ORDER BY id_sms") == [("1",), ("3",)]


@SQLITE
def test_the_process_ignores_the_groups_signals_and_ends_with_the_writer(
    engine: Engine,
) -> None:
    """SIGINT and SIGTERM, which a terminal or a service manager sends the
    whole group, leave it committing: the server ends it when it stops."""
    children: list[psutil.Process] = []

    async def scenario(writer: Writer) -> None:
        await writer.submit(submission("1", b"a"))
        children.extend(commit_processes(os.getpid()))
        for signum in (signal.SIGINT, signal.SIGTERM):
            children[0].send_signal(signum)
        await asyncio.sleep(0.2)
        assert (await writer.submit(submission("2", b"b"))).acked_ids == ["2"]
        assert [child.pid for child in commit_processes(os.getpid())] == [children[0].pid]

    stopping = with_writer(engine, scenario)
    assert not children[0].is_running()
    assert stopping < EXIT_WAIT_SECONDS  # it exited by itself, not killed at the deadline
    assert commit_processes(os.getpid()) == []


@SQLITE
def test_the_process_ends_with_a_server_killed_alone(settings: Settings, tmp_path: Path) -> None:
    """kill -9 of the server's process only (not its group): the commit
    process sees its socket close and exits, holding no lock behind it."""
    server = ServerProcess(tmp_path, {"DATABASE_URL": settings.database_url})
    server.start()
    try:
        document = b'<request><state id_sms="5" time="">deliver</state></request>'
        answer = httpx.post(server.url + CALLBACK_PATH, content=document, timeout=10)
        assert answer.status_code == 200 and b"5" in answer.content
        assert server.process is not None
        (child,) = commit_processes(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        child.wait(10)  # raises if it is still running by then
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group, if any is left of it
            server.kill()


@SQLITE
def test_the_process_runs_the_servers_code_whatever_its_working_directory(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package named `app` in the working directory (another checkout, say)
    is not what the commit process imports: it runs the server's own code."""
    decoy = tmp_path / "decoy" / "app"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text('raise SystemExit("the decoy was imported")\n')
    monkeypatch.chdir(decoy.parent)

    async def scenario(writer: Writer) -> None:
        assert (await writer.submit(submission("1", b"a"))).acked_ids == ["1"]

    with_writer(engine, scenario)
