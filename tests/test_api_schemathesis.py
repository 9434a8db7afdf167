"""schemathesis against a live server's /openapi.json, on both databases.

It fuzzes the read endpoints (the GETs of issue 3) with a key and checks that no answer is a
server error and that each one matches what the schema declares (status,
content type, headers, body), that invalid input is refused and that a
missing key is refused. `positive_data_acceptance` is left out: a cursor is
opaque, so a string the schema allows is not necessarily one we handed out
(that is a 422 `invalid_cursor`, by design).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tests.api_helpers import push, track
from tests.conftest import TEST_TOKEN, LiveServer

ST = str(Path(sys.executable).with_name("st"))
READ_API_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "ignored_auth"
)


def schemathesis(server: LiveServer, tmp_path: Path, *options: str) -> str:
    command = [
        ST,
        "run",
        f"{server.url}/openapi.json",
        "--header",
        "Authorization: Bearer read-key-1",
        "--seed",
        "20261125",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        *options,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "FAILURES" not in result.stdout
    assert " passed" in result.stdout
    return result.stdout


def test_schemathesis_finds_no_error_in_the_read_api(
    server: LiveServer, client: httpx.Client, engine: Engine, tmp_path: Path
) -> None:
    push(client, ("1", "send", ""), ("2", "deliver", "2024-03-01 12:00:00"))
    push(client, ("2", "expired", "2024-03-01 12:01:00"), ("3", "read", "bad time"))
    track(engine, "4", datetime.now(UTC), given_up=True)
    report = schemathesis(
        server,
        tmp_path,
        "--exclude-method-regex",
        "(?i)^(?!get$)",
        "--include-path-regex",
        "^/api/v1/(messages|changes|stats)",
        "--checks",
        READ_API_CHECKS,
        "--max-examples",
        "40",
    )
    assert "Tested: 4" in report  # the message lookup and list, the feed, the stats


def test_schemathesis_finds_no_server_error_in_the_callback(
    server: LiveServer, tmp_path: Path
) -> None:
    # XML in, XML out, behind a path token: only "never a 5xx" applies here.
    # First with fuzzed tokens (all 404), then with the right one (schemathesis
    # reads schemathesis.toml from its working directory).
    options = ("--include-path-regex", "^/callbacks/", "--checks", "not_a_server_error")
    schemathesis(server, tmp_path, *options, "--max-examples", "30")
    (tmp_path / "schemathesis.toml").write_text(
        f'[[operations]]\ninclude-path-regex = "^/callbacks/"\n'
        f'parameters = {{ token = "{TEST_TOKEN}" }}\n'
    )
    schemathesis(server, tmp_path, *options, "--max-examples", "30")
