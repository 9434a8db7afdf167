"""`POST /api/v1/messages`: tracking sent ids, as JSON or the provider's send answer."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from tests.api_helpers import push
from tests.conftest import rows
from tests.sim_helpers import ADMIN, READ

SEND_ANSWER = """<?xml version="1.0" encoding="utf-8"?>
<response>
<information number_sms="1" id_sms="5001" parts="2">send</information>
<information number_sms="2" parts="1">Номер телефона присутствует в стоп-листе.</information>
<information number_sms="3" id_sms="5003" parts="1">send</information>
</response>"""


def track(client: httpx.Client, ids: list[str], headers: dict[str, str] = READ) -> httpx.Response:
    return client.post("/api/v1/messages", json={"ids": ids}, headers=headers)


def test_json_ids_are_tracked_and_shown_as_waiting(client: httpx.Client, engine: Engine) -> None:
    answer = track(client, ["1001", "1002", "1001"])
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"tracked": ["1001", "1002"], "already_known": [], "failed": []}
    shown = client.get("/api/v1/messages/1001", headers=READ).json()
    assert shown["status"] is None
    assert shown["final"] is False
    assert shown["tracked_at"] is not None
    assert shown["events"] == []


def test_tracking_is_idempotent(client: httpx.Client, engine: Engine) -> None:
    assert track(client, ["1001"]).status_code == 201
    before = rows(engine, "SELECT tracked_at, first_seen_at FROM messages")
    again = track(client, ["1001", "1003"], headers=ADMIN)
    assert again.status_code == 201
    assert again.json()["tracked"] == ["1003"]
    assert again.json()["already_known"] == ["1001"]
    third = track(client, ["1001", "1003"])
    assert third.status_code == 200
    assert third.json() == {"tracked": [], "already_known": ["1001", "1003"], "failed": []}
    assert rows(engine, "SELECT tracked_at, first_seen_at FROM messages WHERE id_sms = '1001'") == (
        before
    )
    assert rows(engine, "SELECT count(*) FROM messages") == [(2,)]


def test_send_answer_xml_records_sent_and_lists_failures(
    client: httpx.Client, engine: Engine
) -> None:
    headers = READ | {"Content-Type": "text/xml; charset=utf-8"}
    answer = client.post("/api/v1/messages", content=SEND_ANSWER.encode(), headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "tracked": ["5001", "5003"],
        "already_known": [],
        "failed": [{"number_sms": "2", "error": "Номер телефона присутствует в стоп-листе."}],
    }
    assert rows(engine, "SELECT id_sms, num_parts, status FROM messages ORDER BY id_sms") == [
        ("5001", 2, None),
        ("5003", 1, None),
    ]


def test_xml_is_recognised_without_a_content_type(client: httpx.Client) -> None:
    body = '<response><information number_sms="1" id_sms="77">send</information></response>'
    answer = client.post("/api/v1/messages", content=body.encode(), headers=READ)
    assert answer.status_code == 201
    assert answer.json()["tracked"] == ["77"]


def test_a_message_whose_callback_came_first_is_marked_tracked(
    client: httpx.Client, engine: Engine
) -> None:
    push(client, ("8001", "deliver", "2020-01-01 12:00:00"))
    answer = client.post(
        "/api/v1/messages",
        content=b'<response><information id_sms="8001" parts="3">send</information></response>',
        headers=READ,
    )
    assert answer.status_code == 200
    assert answer.json()["already_known"] == ["8001"]
    assert rows(engine, "SELECT status, num_parts, tracked_at IS NOT NULL FROM messages") == [
        ("deliver", 3, True)
    ]


def test_invalid_input_is_refused_and_nothing_stored(client: httpx.Client, engine: Engine) -> None:
    for body in ({"ids": ["１２"]}, {"ids": ["12 "]}, {"ids": []}, {"ids": ["1" * 20]}, {}):
        answer = client.post("/api/v1/messages", json=body, headers=READ)
        assert answer.status_code == 422, body
        assert answer.json()["error"] == "invalid_ids"
    hostile = b'<!DOCTYPE r [<!ENTITY a "b">]><response><information id_sms="1"/></response>'
    answer = client.post("/api/v1/messages", content=hostile, headers=READ)
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_send_answer")
    refused = "<response><error>Неправильный логин или пароль</error></response>".encode()
    answer = client.post("/api/v1/messages", content=refused, headers=READ)
    assert (answer.status_code, answer.json()["error"]) == (422, "send_failed")
    assert "Неправильный логин" in answer.json()["detail"]
    assert rows(engine, "SELECT count(*) FROM messages") == [(0,)]


def test_tracking_needs_an_api_key(client: httpx.Client) -> None:
    assert client.post("/api/v1/messages", json={"ids": ["1"]}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/api/v1/messages", json={"ids": ["1"]}, headers=wrong).status_code == 401


def test_openapi_documents_both_body_forms(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/api/v1/messages"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/xml"}
    assert {"200", "201", "401", "422"} <= set(operation["responses"])
