"""The callback endpoint over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.retention import purge_documents
from tests.conftest import CALLBACK_PATH, TEST_TOKEN, LiveServer, rows
from tests.deploy_helpers import metric

DIGEST_PUSH = b"""<?xml version="1.0" encoding="utf-8"?>
<request>
  <state id_sms="12345" time="2020-01-01 12:57:46">deliver</state>
  <state id_sms="12346" time="2020-01-01 12:57:46">not_deliver</state>
</request>"""
DIGEST_ACK = b"""<?xml version="1.0" encoding="utf-8" ?>
<response>
<id_sms>12345</id_sms>
<id_sms>12346</id_sms>
</response>"""


def doc(*states: tuple[str, str, str]) -> bytes:
    body = "".join(f'<state id_sms="{i}" time="{t}">{s}</state>' for i, s, t in states)
    return f"<request>{body}</request>".encode()


def acked(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [
        line.removeprefix("<id_sms>").removesuffix("</id_sms>")
        for line in response.text.splitlines()
        if line.startswith("<id_sms>")
    ]


def stored_states(engine: Engine) -> list[tuple[object, ...]]:
    return rows(engine, "SELECT id_sms, status, time_raw FROM events ORDER BY id")


def current(engine: Engine) -> dict[object, tuple[object, ...]]:
    query = "SELECT id_sms, status, final, conflict FROM messages"
    return {row[0]: row[1:] for row in rows(engine, query)}


def test_digest_document_byte_for_byte(client: httpx.Client, engine: Engine) -> None:
    response = client.post(CALLBACK_PATH, content=DIGEST_PUSH)
    assert response.status_code == 200
    assert response.content == DIGEST_ACK
    assert response.headers["content-type"] == "application/xml; charset=utf-8"
    assert stored_states(engine) == [
        ("12345", "deliver", "2020-01-01 12:57:46"),
        ("12346", "not_deliver", "2020-01-01 12:57:46"),
    ]
    status_at = rows(engine, "SELECT status_at FROM messages WHERE id_sms = '12345'")[0][0]
    assert str(status_at).startswith("2020-01-01 09:57:46")


def test_no_content_type_is_needed_and_any_is_accepted(
    client: httpx.Client, engine: Engine
) -> None:
    response = client.post(
        CALLBACK_PATH, content=doc(("1", "send", "")), headers={"content-type": "text/plain"}
    )
    assert acked(response) == ["1"]


@pytest.mark.parametrize("path", ["/callbacks/targetsms/wrong-token", "/callbacks/targetsms/"])
def test_wrong_or_missing_token_is_404_and_stores_nothing(
    client: httpx.Client, engine: Engine, path: str
) -> None:
    response = client.post(path, content=DIGEST_PUSH)
    assert response.status_code == 404
    assert rows(engine, "SELECT count(*) FROM documents") == [(0,)]
    assert stored_states(engine) == []


HOSTILE = {
    "billion laughs": b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b'<request><state id_sms="1" time="">&lol2;</state></request>',
    "external entity": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<request><state id_sms="1" time="">&x;</state></request>',
    "external dtd": b'<!DOCTYPE request SYSTEM "http://127.0.0.1:9/r.dtd">'
    b'<request><state id_sms="1" time="">deliver</state></request>',
    "deep nesting": b"<request>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</request>",
    "nul byte": b'<request><state id_sms="1" time="">deliver\x00</state></request>',
    "trailing junk": b'<request><state id_sms="1" time="">deliver</state></request><x/>',
    "empty": b"",
    "not xml": b"id_sms=1&status=deliver",
    "koi8-r": '<?xml version="1.0" encoding="koi8-r"?><request><state id_sms="1" time="">'
    "deliver</state></request>".encode("koi8-r"),
    "utf-32": b'<?xml version="1.0" encoding="utf-32"?><request/>',
    "shift_jis": b'<?xml version="1.0" encoding="shift_jis"?><request/>',
    "utf-16 without bom": '<request><state id_sms="1" time="">deliver</state></request>'.encode(
        "utf-16-le"
    ),
    "wrong root": b'<sms><state id_sms="1" time="">deliver</state></sms>',
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_and_malformed_input_is_400_and_stores_no_state(
    client: httpx.Client, engine: Engine, body: bytes
) -> None:
    response = client.post(CALLBACK_PATH, content=body)
    assert response.status_code == 400
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8" ?>\n<response><error>')
    assert "<id_sms>" not in response.text
    assert stored_states(engine) == []
    assert rows(engine, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(engine, "SELECT outcome, acked_ids FROM documents") == [("rejected", "")]


def test_odd_ids_are_skipped_the_rest_acknowledged(client: httpx.Client, engine: Engine) -> None:
    body = (
        '<request><state id_sms="１２" time="">deliver</state>'
        '<state id_sms="1_2" time="">deliver</state><state id_sms="+12" time="">deliver</state>'
        '<state id_sms="1&lt;/id_sms&gt;&lt;x/&gt;" time="">deliver</state>'
        '<state id_sms="12" time="">send</state></request>'
    ).encode()
    response = client.post(CALLBACK_PATH, content=body)
    assert acked(response) == ["12"]
    assert "<x/>" not in response.text
    assert stored_states(engine) == [("12", "send", "")]


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "chunked"])
def test_oversize_body_is_413_and_stores_nothing(database_url: str, send_length: bool) -> None:
    settings = Settings(database_url=database_url, callback_token=TEST_TOKEN, max_body_bytes=1000)
    body = doc(*[(str(i), "send", "") for i in range(100)])
    assert len(body) > 1000
    content: bytes | Iterator[bytes] = body if send_length else iter([body[:600], body[600:]])
    with LiveServer(settings) as live, httpx.Client(base_url=live.url) as http:
        response = http.post(CALLBACK_PATH, content=content)
    assert response.status_code == 413
    assert "<error>" in response.text


def test_duplicates_within_and_across_documents_are_stored_once(
    client: httpx.Client, engine: Engine
) -> None:
    body = doc(("5", "send", ""), ("5", "send", ""), ("5", "deliver", "2020-01-01 10:00:00"))
    assert acked(client.post(CALLBACK_PATH, content=body)) == ["5"]
    assert acked(client.post(CALLBACK_PATH, content=body)) == ["5"]
    assert stored_states(engine) == [("5", "send", ""), ("5", "deliver", "2020-01-01 10:00:00")]
    assert rows(engine, "SELECT duplicate_count FROM documents ORDER BY id") == [(1,), (3,)]


def test_unknown_status_and_unreadable_time_are_stored_and_acknowledged(
    client: httpx.Client, engine: Engine
) -> None:
    body = doc(("8", "read", "2020-01-01 10:00:00"), ("9", "deliver", "soon"))
    assert acked(client.post(CALLBACK_PATH, content=body)) == ["8", "9"]
    assert current(engine) == {"8": ("read", False, False), "9": ("deliver", True, False)}
    assert rows(engine, "SELECT status_at, time_raw FROM events WHERE id_sms = '9'") == [
        (None, "soon")
    ]


def test_out_of_order_states_never_move_a_message_back(
    client: httpx.Client, engine: Engine
) -> None:
    client.post(CALLBACK_PATH, content=doc(("3", "deliver", "2020-01-01 10:00:05")))
    client.post(CALLBACK_PATH, content=doc(("3", "send", "")))
    assert current(engine) == {"3": ("deliver", True, False)}
    assert len(stored_states(engine)) == 2


def test_a_second_final_status_is_a_flagged_conflict(client: httpx.Client, engine: Engine) -> None:
    client.post(CALLBACK_PATH, content=doc(("4", "deliver", "2020-01-01 10:00:00")))
    client.post(CALLBACK_PATH, content=doc(("4", "expired", "2020-01-01 11:00:00")))
    assert current(engine) == {"4": ("deliver", True, True)}
    assert rows(engine, "SELECT status, conflict FROM events ORDER BY id") == [
        ("deliver", False),
        ("expired", True),
    ]


def test_raw_documents_are_kept_for_audit_then_purged(client: httpx.Client, engine: Engine) -> None:
    client.post(CALLBACK_PATH, content=DIGEST_PUSH)
    ((body, remote, outcome, acked_ids),) = rows(
        engine, "SELECT body, remote_addr, outcome, acked_ids FROM documents"
    )
    assert (bytes(body), remote, outcome, acked_ids) == (  # type: ignore[arg-type]
        DIGEST_PUSH,
        "127.0.0.1",
        "stored",
        "12345 12346",
    )
    assert purge_documents(engine, 30) == 0
    assert purge_documents(engine, 30, now=datetime.now(UTC) + timedelta(days=31)) == 1
    assert rows(engine, "SELECT count(*) FROM documents") == [(0,)]
    assert len(stored_states(engine)) == 2


def test_shuffled_concurrent_deliveries_end_right(server: LiveServer, engine: Engine) -> None:
    """Every id gets `send` and a final status; 16 concurrent requests carry them
    in shuffled, duplicated order, so batches overlap and arrive out of order."""
    ids = [str(1000 + n) for n in range(60)]
    states = []
    for id_sms in ids:
        states += [(id_sms, "send", ""), (id_sms, "deliver", "2020-01-01 10:00:00")]
    documents = []
    rng = random.Random(7)
    for _ in range(48):
        documents.append(doc(*rng.sample(states, 40)))
    documents.append(doc(*states))  # every state at least once

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            limit = asyncio.Semaphore(16)

            async def post(body: bytes) -> httpx.Response:
                async with limit:
                    return await http.post(CALLBACK_PATH, content=body)

            return await asyncio.gather(*(post(body) for body in documents))

    responses = asyncio.run(post_all())
    assert all(r.status_code == 200 for r in responses)
    assert len(stored_states(engine)) == len(states)
    assert set(stored_states(engine)) == set(states)
    assert current(engine) == {id_sms: ("deliver", True, False) for id_sms in ids}


def test_failing_commit_gives_503_and_acknowledges_nothing(
    client: httpx.Client, engine: Engine
) -> None:
    _make_inserts_of_id_fail(engine, "666")
    response = client.post(CALLBACK_PATH, content=doc(("665", "send", ""), ("666", "send", "")))
    assert response.status_code == 503
    assert "<id_sms>" not in response.text
    assert stored_states(engine) == []
    # The database is fine for other documents, even in the same group commit.
    assert acked(client.post(CALLBACK_PATH, content=doc(("665", "send", "")))) == ["665"]


def _make_inserts_of_id_fail(engine: Engine, id_sms: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER fail_commit BEFORE INSERT ON events "
                    f"WHEN NEW.id_sms = '{id_sms}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
            return
        # A deferred constraint trigger fails the COMMIT itself, not an INSERT.
        conn.execute(
            text(
                "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON events "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                f"WHEN (NEW.id_sms = '{id_sms}') EXECUTE FUNCTION fail_commit()"
            )
        )


def test_unreachable_database_gives_503() -> None:
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:9/unreachable",
        callback_token=TEST_TOKEN,
        db_connect_timeout_seconds=2,
    )
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        response = http.post(CALLBACK_PATH, content=DIGEST_PUSH)
    assert response.status_code == 503
    assert "<id_sms>" not in response.text
    assert "postgres" not in response.text


def test_token_never_reaches_the_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with LiveServer(settings) as live, httpx.Client(base_url=live.url) as http:
        http.post(CALLBACK_PATH, content=DIGEST_PUSH)
        http.post(CALLBACK_PATH, content=b"<bad")
        http.post(CALLBACK_PATH + "/extra", content=b"")
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in server_side)
    assert "POST /callbacks/targetsms/<token> 200" in logged
    assert TEST_TOKEN not in logged


def test_a_client_gone_mid_body_is_no_server_error(
    server: LiveServer, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    head = (
        f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + DIGEST_PUSH[:40])
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "POST /callbacks/targetsms/<token>" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "POST /callbacks/targetsms/<token> 400" in caplog.text
    assert "Exception in ASGI application" not in caplog.text
    assert stored_states(engine) == []


# Issue 9, item 1: one time without a UTC equivalent once failed the whole document.
UNREPRESENTABLE = doc(
    ("1", "deliver", "0001-01-01 00:00:00"), ("2", "deliver", "2026-11-20 12:00:00")
)


def test_a_time_without_a_utc_equivalent_is_stored_as_unknown(
    client: httpx.Client, engine: Engine
) -> None:
    assert acked(client.post(CALLBACK_PATH, content=UNREPRESENTABLE)) == ["1", "2"]
    query = "SELECT id_sms, status_time_raw, status_at IS NULL FROM messages ORDER BY id_sms"
    assert rows(engine, query) == [
        ("1", "0001-01-01 00:00:00", True),
        ("2", "2026-11-20 12:00:00", False),
    ]


class _BrokenZone(tzinfo):
    """A zone whose every conversion fails with what no caller expects."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("zone data unusable")

    def dst(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("zone data unusable")


class _SettingsWithBrokenZone(Settings):
    @property
    def zone(self) -> ZoneInfo:
        return _BrokenZone()  # type: ignore[return-value]


def test_an_unexpected_failure_is_a_kept_503_never_a_bare_500(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    broken = _SettingsWithBrokenZone(**settings.model_dump())
    with LiveServer(broken) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        before = metric(http.get("/metrics").text, "targetsms_callback_requests_total", code="503")
        response = http.post(CALLBACK_PATH, content=UNREPRESENTABLE)
        after = metric(http.get("/metrics").text, "targetsms_callback_requests_total", code="503")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/xml; charset=utf-8"
    assert "<id_sms>" not in response.text
    assert after == before + 1
    assert stored_states(engine) == []
    (kept,) = rows(engine, "SELECT outcome, error, body, acked_ids FROM documents")
    assert kept[0] == "rejected" and "internal error (RuntimeError)" in str(kept[1])
    assert bytes(kept[2]) == UNREPRESENTABLE and kept[3] == ""  # type: ignore[arg-type]
    failures = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(failures) == 1 and "RuntimeError" in failures[0].getMessage()
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert TEST_TOKEN not in "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server_side)


# Issue 9, item 3: the declaration is read whole, however it is padded.
@pytest.mark.parametrize(
    "encoding", ["koi8-r", "iso-8859-5", "cp866", "cp1252", "us-ascii", "utf-16"]
)
def test_a_padded_refused_encoding_is_400(
    client: httpx.Client, engine: Engine, encoding: str
) -> None:
    body = f'<?xml version="1.0"{" " * 250}encoding="{encoding}"?>'.encode() + doc(
        ("1", "deliver", "")
    )
    response = client.post(CALLBACK_PATH, content=body)
    assert response.status_code == 400
    assert "unsupported encoding" in response.text
    assert stored_states(engine) == []


# Issue 9, item 4: element content inside <state> is skipped, never cut short.
def test_a_state_with_element_content_is_skipped_and_counted(
    client: httpx.Client, engine: Engine
) -> None:
    before = metric(
        client.get("/metrics").text, "targetsms_callback_states_total", outcome="rejected"
    )
    body = (
        b'<request><state id_sms="1" time="">del<b>x</b>iver</state>'
        b'<state id_sms="2" time="">deliver</state></request>'
    )
    assert acked(client.post(CALLBACK_PATH, content=body)) == ["2"]
    after = metric(
        client.get("/metrics").text, "targetsms_callback_states_total", outcome="rejected"
    )
    assert after == before + 1
    assert stored_states(engine) == [("2", "deliver", "")]


def test_an_over_long_time_is_skipped_never_truncated(client: httpx.Client, engine: Engine) -> None:
    first, second = "2026-11-20 12:00:00" + "x" * 60, "2026-11-20 12:00:00" + "y" * 60
    body = doc(("1", "read", first), ("1", "read", second), ("2", "read", "z" * 64))
    assert acked(client.post(CALLBACK_PATH, content=body)) == ["2"]
    assert stored_states(engine) == [("2", "read", "z" * 64)]


def test_the_callback_answered_ahead_of_routing_is_still_a_route_like_the_others(
    client: httpx.Client, engine: Engine
) -> None:
    """CallbackEndpoint answers the POSTs itself; everything else about the
    path is FastAPI's as before, and the OpenAPI document still describes it."""
    response = client.post(CALLBACK_PATH, content=DIGEST_PUSH)
    assert response.status_code == 200
    assert response.headers["x-request-id"]  # inside the request log, like every route
    assert client.get(CALLBACK_PATH).status_code == 405
    assert client.post(CALLBACK_PATH + "/more", content=DIGEST_PUSH).status_code == 404
    assert client.post("/callbacks/targetsms/", content=DIGEST_PUSH).status_code == 404
    assert len(stored_states(engine)) == 2  # only the first POST stored anything
    operation = client.get("/openapi.json").json()["paths"]["/callbacks/targetsms/{token}"]
    assert set(operation) == {"post"}
    assert {"200", "400", "503"} <= set(operation["post"]["responses"])
