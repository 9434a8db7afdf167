"""The API's answers when the database is down, and when something unexpected fails.

Both against real failures: a stopped PostgreSQL cluster of the test's own, a
SQLite database whose directory is gone, rows the code cannot read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.migrate import upgrade
from tests.api_helpers import READ
from tests.conftest import TEST_TOKEN, LiveServer
from tests.private_postgres import PrivatePostgres

# Every read endpoint and the tracking POST: each touches the database.
DATABASE_CALLS: list[tuple[str, str, dict[str, object]]] = [
    ("GET", "/api/v1/messages", {}),
    ("GET", "/api/v1/messages/12345", {}),
    ("GET", "/api/v1/changes", {}),
    ("GET", "/api/v1/changes", {"params": {"wait": "1"}}),
    ("GET", "/api/v1/stats", {}),
    ("POST", "/api/v1/messages", {"json": {"ids": ["12345"]}}),
]


def service_settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        callback_token=TEST_TOKEN,  # so that starting needs no database
        api_keys="read-key-2",
        db_connect_timeout_seconds=2,
    )


def assert_all_unavailable(http: httpx.Client) -> None:
    for method, path, options in DATABASE_CALLS:
        answer = http.request(method, path, headers=READ, **options)  # type: ignore[arg-type]
        assert answer.status_code == 503, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "error": "database_unavailable",
            "detail": "The database is unavailable; try again later.",
        }
        assert int(answer.headers["retry-after"]) > 0


def assert_all_answer(http: httpx.Client) -> None:
    for method, path, options in DATABASE_CALLS:
        answer = http.request(method, path, headers=READ, **options)  # type: ignore[arg-type]
        assert answer.status_code in {200, 201, 404}, (method, path, answer.text)


@pytest.mark.postgres
def test_a_stopped_postgresql_gets_a_json_503_and_recovers(
    private_postgres_cluster: PrivatePostgres,
) -> None:
    cluster = private_postgres_cluster
    url = cluster.create_database("api_outage")
    upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    with LiveServer(service_settings(url)) as server, httpx.Client(base_url=server.url) as http:
        assert_all_answer(http)  # the pool holds live connections now
        cluster.stop()
        assert_all_unavailable(http)
        cluster.start()
        assert_all_answer(http)


def test_a_sqlite_database_that_is_not_there_gets_a_json_503_and_recovers(
    sqlite_template: Path, tmp_path: Path
) -> None:
    # As a volume not mounted yet when the service starts. (Removed under a
    # running service, SQLite goes on reading the open, unlinked file.)
    directory = tmp_path / "volume"
    with (
        LiveServer(service_settings(f"sqlite:///{directory}/receiver.db")) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert_all_unavailable(http)
        directory.mkdir()
        shutil.copy(sqlite_template, directory / "receiver.db")
        assert_all_answer(http)


def unreadable_row(engine: Engine, database_url: str) -> None:
    """A message whose `updated_at` the driver cannot turn into a datetime."""
    # SQLite stores any text, which SQLAlchemy cannot parse; PostgreSQL holds
    # years past 9999, which Python cannot.
    value = "not a time" if database_url.startswith("sqlite") else "20000-01-01 00:00:00+00"
    insert = text(
        "INSERT INTO messages (id_sms, first_seen_at, updated_at, final, conflict)"
        " VALUES ('777', :value, :value, false, false)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"value": value})


def test_an_unexpected_error_is_a_json_500_with_the_request_id_and_a_logged_traceback(
    client: httpx.Client,
    engine: Engine,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("ERROR")
    unreadable_row(engine, database_url)
    answer = client.get("/api/v1/messages/777", headers=READ | {"X-Request-ID": "broken-row-1"})
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "internal_error",
        "detail": "An unexpected error occurred.",
        "request_id": "broken-row-1",
    }
    assert answer.headers["x-request-id"] == "broken-row-1"
    logged = [r for r in caplog.records if r.name == "app.api.errors"]
    assert len(logged) == 1
    assert logged[0].getMessage() == "unhandled error on GET /api/v1/messages/777"
    assert logged[0].exc_info is not None  # the traceback
    # The listing fails the same way, and the service goes on serving.
    assert client.get("/api/v1/messages", headers=READ).status_code == 500
    assert client.get("/api/v1/stats", headers=READ).status_code == 200


def test_the_openapi_document_declares_503_and_500_on_every_database_route(
    client: httpx.Client,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = {
        (method.upper(), path): paths[path][method]
        for path in paths
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/admin")
        for method in paths[path]
    }
    # The read endpoints (messages, changes, stats, reconciliations, costs) and tracking.
    assert len(operations) == 7
    for where, operation in operations.items():
        unavailable = operation["responses"]["503"]
        example = unavailable["content"]["application/json"]["example"]
        assert example["error"] == "database_unavailable", where
        assert "Retry-After" in unavailable["headers"], where
        internal = operation["responses"]["500"]["content"]["application/json"]
        assert internal["example"]["error"] == "internal_error", where
        assert internal["schema"]["$ref"].endswith("/InternalErrorBody"), where


def test_get_root_points_to_the_documentation(client: httpx.Client) -> None:
    answer = client.get("/")
    assert answer.status_code == 200
    pointers = answer.json()
    assert pointers["docs"] == "/docs"
    assert client.get(pointers["docs"]).status_code == 200
    assert client.get(pointers["openapi"]).json()["info"]["title"] == "targetsms-receiver"
