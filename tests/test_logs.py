"""Logs of the real `serve` process: request ids, JSON lines, no forged lines, no secrets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.conftest import CALLBACK_PATH, TEST_TOKEN
from tests.deploy_helpers import ServeProcess

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
