"""Logs of the real `serve` process: request ids, JSON lines, no forged lines, no secrets."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

import httpx

from app.logs import TRACEBACK_HEAD, TextFormatter, public_path, redact
from tests.conftest import CALLBACK_PATH, TEST_TOKEN, free_port
from tests.deploy_helpers import VENV_BIN, ServeProcess

PUSH = b'<request><state id_sms="600001" time="2020-01-01 12:00:00">deliver</state></request>'
FORGED_LINE = '{"level": "CRITICAL", "message": "forged"}'
INJECTION = "/nothing%0D%0A" + FORGED_LINE.replace(" ", "%20").replace('"', "%22")


def run_requests(tmp_path: Path, log_format: str) -> tuple[str, dict[str, str]]:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/logs.db",
        "CALLBACK_TOKEN": TEST_TOKEN,
        "API_KEYS": "secret-read-key-1",
        "LOG_FORMAT": log_format,
    }
    echoed = {}
    with ServeProcess(tmp_path, env) as serve, httpx.Client(base_url=serve.url) as http:
        answer = http.post(CALLBACK_PATH, content=PUSH, headers={"X-Request-ID": "given-id.42"})
        assert answer.status_code == 200
        echoed["given"] = answer.headers["x-request-id"]
        echoed["invalid"] = http.get("/livez", headers={"X-Request-ID": "bad id"}).headers[
            "x-request-id"
        ]
        echoed["none"] = http.get("/livez").headers["x-request-id"]
        assert http.get(INJECTION).status_code == 404
        http.get("/api/v1/messages", headers={"Authorization": "Bearer secret-read-key-1"})
    return serve.logs(), echoed


def test_json_lines_carry_the_request_id_and_cannot_be_forged(tmp_path: Path) -> None:
    logs, echoed = run_requests(tmp_path, "json")
    lines = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object
    assert not any(line.get("level") == "CRITICAL" for line in lines)
    access = [line for line in lines if line["logger"] == "app.access"]
    callback = next(line for line in access if line["method"] == "POST")
    assert callback["request_id"] == echoed["given"] == "given-id.42"
    assert callback["path"] == "/callbacks/targetsms/<token>"
    assert callback["status"] == 200
    assert callback["client"] == "127.0.0.1"
    assert isinstance(callback["duration_ms"], float)
    assert {"timestamp", "level", "message"} <= callback.keys()
    # An id that is not well formed is replaced; none given: one is made.
    assert re.fullmatch(r"[0-9a-f]{32}", echoed["invalid"])
    assert re.fullmatch(r"[0-9a-f]{32}", echoed["none"])
    ids = {line["request_id"] for line in access}
    assert {echoed["invalid"], echoed["none"]} <= ids
    injected = next(line for line in access if line["path"].startswith("/nothing"))
    assert injected["path"] == "/nothing\r\n" + FORGED_LINE  # kept, inside one JSON string
    # uvicorn's own access log (it prints the raw path) stays off.
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
    assert TEST_TOKEN not in logs
    assert "secret-read-key-1" not in logs
    assert "<state" not in logs  # no bodies


def test_text_lines_escape_cr_and_lf(tmp_path: Path) -> None:
    logs, echoed = run_requests(tmp_path, "text")
    assert not any(line.startswith(FORGED_LINE) for line in logs.splitlines())
    assert "/nothing\\r\\n" + FORGED_LINE in logs
    assert f"[{echoed['given']}]: 127.0.0.1 POST /callbacks/targetsms/<token> 200" in logs
    assert TEST_TOKEN not in logs


def test_a_failed_start_logs_its_traceback_as_indented_lines(tmp_path: Path) -> None:
    # No token configured and no database to keep one in: the start fails,
    # and uvicorn logs the traceback as the text of one record.
    env = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        "DB_CONNECT_TIMEOUT_SECONDS": "2",
        "LOG_FORMAT": "text",
    }
    command = ["targetsms-receiver", "serve", "--port", str(free_port())]
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        command, env={"PATH": path, **env}, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    logs = done.stderr + done.stdout
    assert done.returncode != 0
    head = next(line for line in logs.splitlines() if line.endswith(TRACEBACK_HEAD))
    assert " ERROR uvicorn.error [-]: " in head
    block = logs.split(head + "\n", 1)[1].splitlines()
    assert block[0].startswith('      File "')  # the traceback's own indent, under ours
    assert any("sqlalchemy.exc.OperationalError" in line for line in block)
    assert "\\n  File" not in logs  # not one line with escaped newlines


def text_record(message: str, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("app.test", logging.ERROR, __file__, 1, message, None, None)
    record.request_id = "rid-1"
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return TextFormatter().format(record)


def test_text_tracebacks_are_indented_so_their_text_cannot_start_a_record() -> None:
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 CRITICAL forged [-]: forged")
    except ValueError as exc:
        formatted = text_record("failed\r\nforged too", exc)
    first, *rest = formatted.splitlines()
    assert first.endswith(" ERROR app.test [rid-1]: failed\\r\\nforged too")
    assert rest[0] == "    Traceback (most recent call last):"
    assert rest[1].startswith('      File "')
    assert rest[-2:] == [
        "    ValueError: bad input",
        "    2026-01-01 00:00:00,000 CRITICAL forged [-]: forged",
    ]
    assert all(line.startswith("    ") for line in rest)


def test_a_logged_traceback_text_reads_as_a_traceback_and_keeps_the_token_out() -> None:
    message = (
        f'{TRACEBACK_HEAD}\n  File "x.py", line 1, in f\n'
        f"RuntimeError: POST {CALLBACK_PATH} failed\n"
    )
    formatted = text_record(message)
    assert formatted.splitlines()[1:] == [
        '      File "x.py", line 1, in f',
        "    RuntimeError: POST /callbacks/targetsms/<token> failed",
    ]
    assert TEST_TOKEN not in formatted


def test_redaction_leaves_a_redacted_path_alone_and_catches_a_token_that_mimics_it() -> None:
    redacted = "POST /callbacks/targetsms/<token> 200"
    assert redact(redacted) == redacted
    for secret in ("s3cr3t-_tok", "<token>s3cr3t", "<tokenX>"):
        line = f"POST /callbacks/targetsms/{secret}?a=1 200"
        assert redact(line) == "POST /callbacks/targetsms/<token>?a=1 200"


def test_text_timestamps_are_logging_s_own_to_the_millisecond_across_seconds() -> None:
    # TextFormatter keeps the text of the current second: each record must
    # still read exactly as logging's own formatter would write it.
    ours, standard = TextFormatter(), logging.Formatter()
    for created in (1_796_000_000.001, 1_796_000_000.999, 1_796_000_001.5, 1_796_000_000.25):
        record = logging.LogRecord("app.test", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert ours.formatTime(record) == standard.formatTime(record)
    assert ours.formatTime(record).endswith(",250")


def test_a_token_inside_another_path_is_redacted_for_the_log() -> None:
    assert public_path("/callbacks/targetsms/s3cr3t") == "/callbacks/targetsms/<token>"
    assert public_path("/x/callbacks/targetsms/s3cr3t/y") == "/x/callbacks/targetsms/<token>/y"
    assert public_path("/api/v1/messages") == "/api/v1/messages"
