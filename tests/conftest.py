"""Fixtures: real migrated databases (SQLite and PostgreSQL) and a real server.

Every test that takes `settings` runs once per database. PostgreSQL tests get
a database of their own, created for the session and dropped after it; when
the server is down they are skipped, except under CI=true, where that is an
error (CI must run them).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import create_db_engine
from app.main import create_app
from app.migrate import upgrade
from tests import private_postgres
from tests.private_postgres import PrivatePostgres

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_TOKEN = "test-callback-token-0123456789abcdefghijklmnopqrstu"
TABLES = ("messages", "events", "documents", "instance_settings")
# Outbound webhooks (issue 11).
TABLES += ("webhook_subscriptions", "webhook_attempts")
# Reconciliation (issue 12).
TABLES += ("message_context", "reconciliation_reports")
# The dashboard's stored interval counts (issue 13).
TABLES += ("event_buckets", "event_bucket_counts")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def postgres_available() -> bool:
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def pytest_sessionstart(session: pytest.Session) -> None:
    if in_ci() and not postgres_available():
        pytest.exit("CI=true but PostgreSQL is not reachable: its tests must run", returncode=3)


postgres_passed = {"count": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        postgres_passed["count"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and exitstatus == 0 and postgres_passed["count"] == 0:
        print("\nCI=true but no PostgreSQL test passed: failing the run")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not running (set CI=true to make this an error)")
    name = f"tsr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    upgrade(Settings(database_url=url))
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        callback_token=TEST_TOKEN,
        api_keys="read-key-1,read-key-2",
        admin_api_keys="admin-key-1",
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(settings)
    yield engine
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """The real app under a real uvicorn, on loopback, in a background thread."""

    def __init__(self, settings: Settings, **uvicorn_options: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,  # as `serve`: the app does proxy trust (TRUSTED_PROXIES)
            **uvicorn_options,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # The dashboard's background work (the warm-up writes its stored interval
        # counts; the cost panel reads): let it end before the engine is disposed
        # and the next test empties the tables. Again once the server has
        # stopped, for a cost refresh a last render started.
        ui = getattr(self.app.state, "ui", None)
        if ui is not None:
            ui.settle(timeout=30)
        self.server.should_exit = True
        self.thread.join(timeout=15)
        if ui is not None:
            ui.settle(timeout=30)


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


CALLBACK_PATH = f"/callbacks/targetsms/{TEST_TOKEN}"


def rows(engine: Engine, query: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(query))]


# --- The wheel installed into a new virtualenv, once per run (packaging, Dockerfile) ---


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.deploy_helpers import build_wheel  # it imports this module

    return build_wheel(tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def installed_wheel(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` of a fresh virtualenv holding only the built wheel and its dependencies."""
    from tests.deploy_helpers import install_wheel

    return install_wheel(built_wheel, tmp_path_factory.mktemp("wheel-venv") / "venv")


# --- A private PostgreSQL cluster a test may stop ---


@pytest.fixture
def private_postgres_cluster() -> Iterator[PrivatePostgres]:
    if not private_postgres.available():
        if in_ci():
            pytest.fail("CI=true but PostgreSQL's server binaries are not installed")
        pytest.skip("PostgreSQL server binaries are not installed")
    with PrivatePostgres(free_port()) as cluster:
        yield cluster
