"""Dashboard pages over real HTTP, on both databases: figures, search, export, detail, escaping."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, insert, update

from app.config import Settings
from app.db import write_transaction
from app.models import InstanceSetting, Message
from app.simulator import SimulatorServer, SimulatorState
from tests.api_helpers import push, store, track
from tests.conftest import LiveServer
from tests.sim_helpers import LOGIN, PASSWORD, with_provider
from tests.ui_helpers import page_csrf, sign_in

TIME = "2026-01-05 10:00:00"


@pytest.fixture
def reader(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sign_in(client, "read-key-1")
        yield client


@pytest.fixture
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sign_in(client, "admin-key-1")
        yield client


def text_of(html: str) -> str:
    """The page's text, tags removed and spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def set_heartbeat(engine: Engine, key: str, value: object) -> None:
    with write_transaction(engine) as conn:
        conn.execute(insert(InstanceSetting), {"key": key, "value": json.dumps(value)})


def test_overview_counts_rates_and_chart(
    settings: Settings, engine: Engine, reader: httpx.Client
) -> None:
    store(engine, settings, [(str(i), "send", "") for i in range(10)])
    finals = ["deliver"] * 6 + ["not_deliver", "expired", "partly_deliver", "read"]
    store(engine, settings, [(str(i), s, TIME) for i, s in enumerate(finals)])
    page = reader.get("/ui/")
    assert page.status_code == 200
    text = text_of(page.text)
    # 6 delivered of 9 final statuses (read is not final), in each period.
    assert text.count("66.7% delivered of final") == 3
    assert "send sent, no status yet 10" in text and "deliver delivered 6" in text
    assert "read 1" in text  # an unknown status, shown as it is
    svg = re.search(r"<svg .*?</svg>", page.text, re.S)
    assert svg and 'data-points="20"' in svg.group()
    assert svg.group().count('class="s-deliver"') == 1
    assert 'class="s-other"' in svg.group()  # read
    month = reader.get("/ui/", params={"chart": "month"})
    assert month.text.count("<rect") == page.text.count("<rect")
    assert reader.get("/ui/", params={"chart": "<x>"}).status_code == 200


def test_figures_fragment_for_the_refresh(
    reader: httpx.Client, settings: Settings, engine: Engine
) -> None:
    fragment = reader.get("/ui/overview/figures")
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "<svg" in fragment.text
    store(engine, settings, [("1", "deliver", TIME)])
    assert 'data-points="1"' in reader.get("/ui/overview/figures").text


def test_the_fragment_without_a_session_redirects_to_sign_in(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/ui/overview/figures")
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"


def test_callbacks_pending_and_the_poller(
    settings: Settings, engine: Engine, client: httpx.Client, reader: httpx.Client
) -> None:
    text = text_of(reader.get("/ui/").text)
    assert "Last arrived never" in text and "Last pass never" in text
    push(client, ("1", "send", ""), ("2", "send", ""))
    now = datetime.now(UTC)
    track(engine, "3", now - timedelta(hours=30))
    track(engine, "4", now - timedelta(hours=100), given_up=True)
    set_heartbeat(
        engine,
        "poller.last_pass",
        {"at": "2026-01-05T07:00:00+00:00", "ok": True, "asked": 17, "error": None},
    )
    text = text_of(reader.get("/ui/").text)
    assert "Last minute 1 " in text
    assert "under 1 hour 2" in text and "1 to 3 days 1" in text and "over 3 days 0" in text
    assert "Backlog (not final) 3" in text and "Given up 1" in text
    assert "Last pass 2026-01-05 10:00:00 (17 ids asked)" in text  # Moscow time


def test_a_differing_callback_url_raises_a_banner(engine: Engine, reader: httpx.Client) -> None:
    assert "differs from the expected" not in reader.get("/ui/").text
    set_heartbeat(
        engine,
        "callback_url.last_check",
        {
            "at": "2026-01-05T07:00:00Z",
            "provider_url": "https://old.example/callbacks/targetsms/<token>",
            "expected_url": "https://new.example/callbacks/targetsms/<token>",
            "matches": False,
            "error": None,
        },
    )
    page = reader.get("/ui/").text
    assert "differs from the expected one" in page
    page = reader.get("/ui/callback-url").text
    assert "https://old.example/callbacks/targetsms/&lt;token&gt;" in page


def test_silent_callbacks_raise_a_banner(
    settings: Settings, engine: Engine, client: httpx.Client, reader: httpx.Client
) -> None:
    now = datetime.now(UTC)
    track(engine, "1", now - timedelta(minutes=5))  # too young to expect anything yet
    assert "No callback has arrived" not in reader.get("/ui/").text
    track(engine, "2", now - timedelta(hours=2))
    assert "No callback has arrived for 30 minutes" in reader.get("/ui/").text
    push(client, ("9", "send", ""))
    assert "No callback has arrived" not in reader.get("/ui/").text


def test_odd_heartbeats_are_shown_not_crashed_on(engine: Engine, reader: httpx.Client) -> None:
    with write_transaction(engine) as conn:
        conn.execute(insert(InstanceSetting), {"key": "poller.last_pass", "value": "{nope"})
        conn.execute(
            insert(InstanceSetting),
            {"key": "callback_url.last_check", "value": '{"at": "2026-01-05T07:00:00Z"}'},
        )
    page = reader.get("/ui/")
    assert page.status_code == 200
    assert "Last pass never" in text_of(page.text)
    assert "Last check 2026-01-05 10:00:00" in text_of(page.text)
    assert reader.get("/ui/callback-url").status_code == 200


def _ids(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/messages/([0-9]+)">', html)


def test_search_by_pasted_ids_and_filters(
    settings: Settings, engine: Engine, reader: httpx.Client
) -> None:
    store(engine, settings, [(str(100 + i), "send", "") for i in range(6)])
    store(engine, settings, [("100", "deliver", TIME), ("101", "expired", TIME)])
    store(engine, settings, [("100", "not_deliver", "2026-01-05 10:01:00")])  # conflict
    with write_transaction(engine) as conn:
        conn.execute(update(Message).where(Message.id_sms == "105").values(source="poll"))
    get = lambda **p: _ids(reader.get("/ui/messages", params=p).text)  # noqa: E731
    assert get() == [str(100 + i) for i in range(6)]
    assert get(ids="105 , 101\n999") == ["101", "105"]
    assert get(status=["deliver", "expired"]) == ["100", "101"]
    assert get(final="no") == ["102", "103", "104", "105"]
    assert get(conflict="yes") == ["100"]
    assert get(source="poll") == ["105"]
    assert get(since="2000-01-01T00:00", until="2000-01-02T00:00") == []
    assert len(get(since="2000-01-01T00:00")) == 6


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"ids": "12a"}, "Ids are 1 to 19 digits"),
        ({"ids": "1" * 20}, "Ids are 1 to 19 digits"),
        ({"since": "yesterday"}, "Times are YYYY-MM-DDTHH:MM"),
        ({"source": "fax"}, "callback or poll"),
        ({"cursor": "bm9wZQ"}, "not valid any more"),
        ({"status": "a\x00b"}, "printable"),
    ],
)
def test_bad_filters_get_a_clear_answer(
    reader: httpx.Client, params: dict[str, str], says: str
) -> None:
    response = reader.get("/ui/messages", params=params)
    assert response.status_code == 422
    assert says in response.text


def test_pages_walk_every_message_once(
    settings: Settings, engine: Engine, reader: httpx.Client
) -> None:
    store(engine, settings, [(str(1000 + i), "send", "") for i in range(120)])
    seen: list[str] = []
    url: str | None = "/ui/messages?final=no"
    while url:
        page = reader.get(url).text
        seen += _ids(page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        assert url is None or "final=no" in url
    assert seen == [str(1000 + i) for i in range(120)]


def test_csv_export_of_the_current_filter(
    settings: Settings, engine: Engine, reader: httpx.Client
) -> None:
    store(
        engine, settings, [("1", "send", ""), ("2", "deliver", TIME), ("3", "=HYPERLINK(1)", TIME)]
    )
    page = reader.get("/ui/messages", params={"final": "no"}).text
    link = re.search(r'<a href="(/ui/messages\.csv[^"]*)" download>', page)
    assert link
    response = reader.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["id_sms"] for row in table] == ["1", "3"]
    assert table[1]["status"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    assert table[1]["status_at"] == "2026-01-05 07:00:00Z"
    everything = reader.get("/ui/messages.csv")
    assert len(list(csv.DictReader(io.StringIO(everything.text)))) == 3
    assert reader.get("/ui/messages.csv", params={"ids": "x"}).status_code == 422


def test_message_detail_history_and_documents_for_admins_only(
    settings: Settings, client: httpx.Client, reader: httpx.Client, admin: httpx.Client
) -> None:
    push(client, ("77", "send", ""))
    push(client, ("77", "deliver", TIME))
    read_page = reader.get("/ui/messages/77").text
    text = text_of(read_page)
    assert "send sent, no status yet" in text and "deliver delivered" in text
    assert "2026-01-05 10:00:00" in text and "2026-01-05 07:00:00Z" in text
    assert "Raw callback documents" not in read_page
    admin_page = admin.get("/ui/messages/77").text
    assert "Raw callback documents" in admin_page
    assert admin_page.count("<details>") == 2
    assert "&lt;request&gt;&lt;state id_sms=&#34;77&#34;" in admin_page  # the body, escaped
    assert reader.get("/ui/messages/78").status_code == 404
    assert reader.get("/ui/messages/7x").status_code == 404


def test_provider_data_is_escaped_everywhere(
    settings: Settings, engine: Engine, client: httpx.Client, admin: httpx.Client
) -> None:
    # XML-escaped in the document, so stored as the raw characters.
    push(
        client, ("5", "&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;")
    )
    for path in ("/ui/", "/ui/messages", "/ui/messages/5"):
        page = admin.get(path).text
        assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in admin.get("/ui/messages/5").text


def test_language_from_accept_language_with_russian_status_meanings(
    settings: Settings, engine: Engine, server: LiveServer
) -> None:
    statuses = ["send", "deliver", "not_deliver", "expired", "partly_deliver"]
    store(engine, settings, [(str(i), s, TIME) for i, s in enumerate(statuses)])
    headers = {"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        sign_in(http, "read-key-1")
        text = text_of(http.get("/ui/messages").text)
    assert "Сообщения" in text and "Время показано в поясе Europe/Moscow (UTC+03:00)" in text
    assert "deliver доставлено" in text and "not_deliver не доставлено" in text
    assert "expired просрочено" in text and "send отправлено" in text
    # partly_deliver: sent, but no status ever came back (the provider's manual).
    assert "partly_deliver отправлено, статус так и не получен" in text
    with httpx.Client(base_url=server.url, headers={"Accept-Language": "de, en;q=0.5"}) as http:
        assert "Sign in" in http.get("/ui/login").text


def test_callback_url_page_registers_with_force_and_reports_refusals(settings: Settings) -> None:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as sim:
        plain = with_provider(settings, sim, public_url="http://127.0.0.1:9")
        with LiveServer(plain) as live, httpx.Client(base_url=live.url) as http:
            sign_in(http, "admin-key-1")
            token = page_csrf(http, "/ui/callback-url")
            refused = http.post("/ui/callback-url/register", data={"csrf": token})
            assert refused.status_code == 422 and "https" in refused.text
            assert sim.state.callback_url == ""
            forced = http.post("/ui/callback-url/register", data={"csrf": token, "force": "yes"})
            assert forced.status_code == 200
            assert "http://127.0.0.1:9/callbacks/targetsms/&lt;token&gt;" in forced.text
            assert sim.state.callback_url.startswith("http://127.0.0.1:9/callbacks/targetsms/")
        wrong = with_provider(settings, sim, targetsms_password="nope")
        with LiveServer(wrong) as live, httpx.Client(base_url=live.url) as http:
            sign_in(http, "admin-key-1")
            token = page_csrf(http, "/ui/callback-url")
            answer = http.post("/ui/callback-url/check", data={"csrf": token})
            assert answer.status_code == 502 and "Неправильный логин или пароль" in answer.text
            assert "nope" not in answer.text


def test_callback_url_page_without_provider_settings(admin: httpx.Client) -> None:
    token = page_csrf(admin, "/ui/callback-url")
    answer = admin.post("/ui/callback-url/check", data={"csrf": token})
    assert answer.status_code == 503 and "TARGETSMS_LOGIN" in answer.text
