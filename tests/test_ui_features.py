"""The dashboard's views of webhooks, cost and reconciliation, over real HTTP on both databases."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, insert, select, text, update

from app import cursors
from app.config import Settings
from app.db import write_transaction
from app.models import MessageContext, ReconciliationReport, WebhookAttempt, WebhookSubscription
from app.reconcile_store import claim_day
from app.webhooks import subscriptions
from tests.api_helpers import store
from tests.conftest import LiveServer
from tests.ui_helpers import page_csrf, sign_in

URL = "https://crm.example.org/hooks/sms"


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def quiet(settings: Settings) -> Iterator[LiveServer]:
    """The service without its delivery role: the subscriptions' state is the test's alone."""
    changed = Settings(**(settings.model_dump() | {"webhook_delivery": False}), _env_file=None)  # type: ignore[arg-type]
    with LiveServer(changed) as live:
        yield live


def signed_in(server: LiveServer, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sign_in(client, key)
        yield client


@pytest.fixture
def reader(quiet: LiveServer) -> Iterator[httpx.Client]:
    yield from signed_in(quiet, "read-key-1")


@pytest.fixture
def admin(quiet: LiveServer) -> Iterator[httpx.Client]:
    yield from signed_in(quiet, "admin-key-1")


def subscription(engine: Engine, **state: Any) -> subscriptions.Created:
    created = subscriptions.create(engine, URL, statuses=["deliver"], description="CRM")
    if state:
        with write_transaction(engine) as conn:
            conn.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == created.view["id"])
                .values(**state)
            )
    return created


def row_of(engine: Engine, subscription_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(WebhookSubscription.__table__).where(WebhookSubscription.id == subscription_id)
        ).one()


def context(engine: Engine, id_sms: str, sent_at: datetime, cost: str, **more: Any) -> None:
    row = {
        "id_sms": id_sms,
        "originator": "Shop",
        "name_delivery": "November sale",
        "operator": "MTS",
        "phone": "7900123****",
        "sent_at": sent_at,
        "sent_time_raw": "2026-11-20 10:00:00",
        "num_parts": 2,
        "price": "0.05",
        "cost": cost,
        "text": None,
        "updated_at": sent_at,
    } | more
    with write_transaction(engine) as conn:
        conn.execute(insert(MessageContext), row)


def report(engine: Engine, day: date, **values: Any) -> None:
    """A report row as a reconciler leaves it: claimed, then finished with `values`."""
    report_id = claim_day(engine, day, "poller-1:42", datetime.now(UTC))
    assert report_id is not None
    with write_transaction(engine) as conn:
        conn.execute(
            update(ReconciliationReport)
            .where(ReconciliationReport.id == report_id)
            .values(**({"status": "done", "lease_until": None} | values))
        )


def test_overview_shows_failing_webhooks_cost_and_the_last_reconciliation(
    settings: Settings, engine: Engine, quiet: LiveServer, reader: httpx.Client
) -> None:
    text = text_of(reader.get("/ui/").text)
    assert "No subscription is failing." in text and "Last reconciliation never" in text

    healthy = subscription(engine)
    retrying = subscription(
        engine, failing_since=datetime(2026, 11, 29, 7, 0, tzinfo=UTC), last_error="HTTP 503"
    )
    stopped = subscription(engine, enabled=False, disabled_reason="failing")
    paused = subscription(engine, enabled=False, disabled_reason="paused")

    now = datetime.now(UTC)
    store(engine, settings, [(str(i), "deliver", "2026-11-20 10:00:00") for i in range(1, 5)])
    context(engine, "1", now, "0.10")
    context(engine, "2", now, "0.20")
    context(engine, "3", now, "3.35")
    context(engine, "4", now - timedelta(days=10), "1.05")
    report(engine, date(2026, 11, 27), status="failed", error="old")
    report(engine, date(2026, 11, 28), added=12, updated=88, flagged=1, error="timeout once")
    quiet.app.state.ui.cost.refresh()  # rather than wait a minute for the next

    page = reader.get("/ui/")
    assert page.status_code == 200
    panel = re.search(r'<section aria-labelledby="h-webhooks".*?</section>', page.text, re.S)
    assert panel is not None
    shown = text_of(panel.group())
    assert f"#{retrying.view['id']}" in shown and "failing since 2026-11-29 10:00:00" in shown
    assert "HTTP 503" in shown
    assert f"#{stopped.view['id']}" in shown and "stopped, retries ran out" in shown
    assert f"#{healthy.view['id']} " not in shown and f"#{paused.view['id']} " not in shown
    assert 'href="/ui/webhooks"' in panel.group()

    cost = re.search(r'<section aria-labelledby="h-cost".*?</section>', page.text, re.S)
    assert cost is not None
    # Decimal sums of the parts' prices: 0.10 + 0.20 + 3.35, then + 1.05 ten days ago.
    assert "Today 3 6 3.65" in text_of(cost.group())
    assert "7 days 3 6 3.65" in text_of(cost.group())
    assert "30 days 4 8 4.70" in text_of(cost.group())

    last = text_of(page.text)
    assert "Day 2026-11-28 Status done Added, updated, flagged 12, 88, 1" in last
    assert "Error timeout once" in last and "2026-11-27" not in last


def cost_panel(page: httpx.Response) -> str:
    found = re.search(r'<section aria-labelledby="h-cost".*?</section>', page.text, re.S)
    assert found is not None
    return text_of(found.group())


def test_a_render_reads_the_cost_panel_from_memory_until_its_refresh(
    settings: Settings, engine: Engine, quiet: LiveServer, reader: httpx.Client
) -> None:
    ui = quiet.app.state.ui
    ui.settle(timeout=30)  # the figures added up at start
    before = cost_panel(reader.get("/ui/"))
    assert "30 days 0 0 0 " in before and "As of " in before
    store(engine, settings, [("1", "deliver", "2026-11-20 10:00:00")])
    context(engine, "1", datetime.now(UTC), "0.10")
    statements: list[str] = []
    app_engine = quiet.app.state.runtime.engine
    listen = event.listens_for(app_engine, "before_cursor_execute")

    @listen
    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    try:
        assert cost_panel(reader.get("/ui/")) == before  # the data changed, the panel not
        assert cost_panel(reader.get("/ui/overview/figures")) == before
    finally:
        event.remove(app_engine, "before_cursor_execute", seen)
    assert statements and not [s for s in statements if "message_context" in s]
    ui.cost.refresh()
    assert "30 days 1 2 0.10" in cost_panel(reader.get("/ui/"))


# PostgreSQL only: a lock there holds the start-up computation back; SQLite (WAL)
# never holds a reader back, and test_ui_cost_panel.py covers it without one.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_the_cost_panel_says_it_is_being_computed_before_its_first_figures(
    settings: Settings, engine: Engine
) -> None:
    store(engine, settings, [("1", "deliver", "2026-11-20 10:00:00")])
    context(engine, "1", datetime.now(UTC), "0.10")
    changed = Settings(**(settings.model_dump() | {"webhook_delivery": False}), _env_file=None)  # type: ignore[arg-type]
    with engine.connect() as lock:
        # The start-up computation waits for this lock, as it would on a month of messages.
        lock.execute(text("LOCK TABLE message_context IN ACCESS EXCLUSIVE MODE"))
        with LiveServer(changed) as live:
            try:
                for client in signed_in(live, "read-key-1"):
                    english = cost_panel(client.get("/ui/", headers={"accept-language": "en"}))
                    russian = cost_panel(client.get("/ui/", headers={"accept-language": "ru"}))
                    assert "Being computed; the figures appear at the next refresh." in english
                    assert "Считается; цифры появятся при следующем обновлении." in russian
                    lock.rollback()
                    assert live.app.state.ui.cost.idle.wait(timeout=30)
                    figures = cost_panel(client.get("/ui/"))
                    assert "Today 1 2 0.10" in figures and "Being computed" not in figures
            finally:
                lock.rollback()


def test_the_webhooks_page_lists_subscriptions_and_attempts_but_no_secret(
    engine: Engine, reader: httpx.Client
) -> None:
    created = subscription(
        engine,
        last_attempt_at=datetime(2026, 11, 29, 7, 0, tzinfo=UTC),
        last_outcome="failed",
        last_status_code=503,
        failing_since=datetime(2026, 11, 29, 7, 0, tzinfo=UTC),
    )
    sub_id = created.view["id"]
    with write_transaction(engine) as conn:
        for n, (outcome, code, error) in enumerate(
            [("delivered", 204, None), ("failed", 503, "HTTP 503 from the receiver")]
        ):
            conn.execute(
                insert(WebhookAttempt),
                {
                    "subscription_id": sub_id,
                    "attempted_at": datetime(2026, 11, 29, 6, n, tzinfo=UTC),
                    "webhook_id": f"msg_{n}",
                    "first_event_id": 1,
                    "last_event_id": 2,
                    "changes": 2,
                    "outcome": outcome,
                    "status_code": code,
                    "latency_ms": 120 + n,
                    "error": error,
                    "response_excerpt": None,
                },
            )
    page = reader.get("/ui/webhooks")
    assert page.status_code == 200
    assert created.secret not in page.text and "whsec_" not in page.text
    text = text_of(page.text)
    assert URL in text and "Filter deliver" in text and "State enabled" in text
    assert f"Cursor {created.view['cursor']}" in text
    assert "Behind 0 changes, 0 s" in text
    assert "Last attempt 2026-11-29 10:00:00 : failed (HTTP 503)" in text
    assert "Failing since 2026-11-29 10:00:00" in text
    # Newest first.
    assert re.search(
        r"2026-11-29 09:01:00 failed 503 121 2 HTTP 503 from the receiver "
        r"2026-11-29 09:00:00 delivered 204 120 2 —",
        text,
    )
    # A read session sees no buttons.
    assert "/pause" not in page.text and "/rotate" not in page.text and "/replay" not in page.text
    assert "An administrator can pause" in text
    # In Russian too (every new text has its translation; tests/test_ui_units.py checks all).
    russian = text_of(reader.get("/ui/webhooks", headers={"accept-language": "ru"}).text)
    assert "Отставание 0 изменений, 0 с" in russian and "Последние попытки" in russian
    overview = text_of(reader.get("/ui/", headers={"accept-language": "ru"}).text)
    assert "Вебхуки" in overview and "Последняя сверка" in overview


def post(client: httpx.Client, path: str, **data: str) -> httpx.Response:
    return client.post(path, data={"csrf": page_csrf(client, "/ui/webhooks"), **data})


def test_an_admin_pauses_resumes_rotates_and_replays(
    engine: Engine, admin: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    created = subscription(engine)
    sub_id = created.view["id"]
    base = f"/ui/webhooks/{sub_id}"
    assert f'action="{base}/pause"' in admin.get("/ui/webhooks").text

    paused = post(admin, f"{base}/pause")
    assert paused.status_code == 200 and "Paused." in paused.text
    row = row_of(engine, sub_id)
    assert row.enabled is False and row.disabled_reason == "paused"
    assert f'action="{base}/resume"' in paused.text

    resumed = post(admin, f"{base}/resume")
    assert resumed.status_code == 200 and "Resumed from its cursor." in resumed.text
    row = row_of(engine, sub_id)
    assert row.enabled is True and row.disabled_reason is None

    caplog.set_level(logging.DEBUG)
    rotated = post(admin, f"{base}/rotate")
    assert rotated.status_code == 200
    new_secret = row_of(engine, sub_id).secret
    assert new_secret != created.secret and new_secret.startswith("whsec_")
    assert f'<code id="new-secret">{new_secret}</code>' in rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    assert new_secret not in admin.get("/ui/webhooks").text  # once, never again
    assert new_secret not in caplog.text

    epoch = row_of(engine, sub_id).epoch
    since = post(admin, f"{base}/replay", since="2000-01-01T00:00:00Z")
    assert since.status_code == 200 and "Rewound" in since.text
    assert row_of(engine, sub_id).epoch == epoch + 1
    after = post(admin, f"{base}/replay", after=cursors.encode(cursors.CHANGES, 0))
    assert after.status_code == 200
    row = row_of(engine, sub_id)
    assert row.epoch == epoch + 2 and row.cursor == 0

    for bad in ({}, {"since": "yesterday"}, {"since": "2026-11-25T00:00:00"}, {"after": "x"}):
        refused = post(admin, f"{base}/replay", **bad)
        assert refused.status_code == 422, bad
    ahead = post(admin, f"{base}/replay", after=cursors.encode(cursors.CHANGES, 10**6))
    assert ahead.status_code == 422 and "beyond the newest change" in ahead.text
    assert post(admin, "/ui/webhooks/999999/pause").status_code == 404
    assert row_of(engine, sub_id).epoch == epoch + 2


def test_a_read_sessions_forged_post_is_refused(engine: Engine, reader: httpx.Client) -> None:
    created = subscription(engine)
    sub_id = created.view["id"]
    for action in ("pause", "rotate"):
        response = post(reader, f"/ui/webhooks/{sub_id}/{action}")
        assert response.status_code == 403
    row = row_of(engine, sub_id)
    assert row.enabled is True and row.secret == created.secret


def test_a_post_without_the_csrf_token_is_refused(engine: Engine, admin: httpx.Client) -> None:
    sub_id = subscription(engine).view["id"]
    assert admin.post(f"/ui/webhooks/{sub_id}/pause").status_code == 403
    assert admin.post(f"/ui/webhooks/{sub_id}/pause", data={"csrf": "x"}).status_code == 403
    assert row_of(engine, sub_id).enabled is True


def test_message_detail_shows_the_reconciliation_context(
    settings: Settings, engine: Engine, reader: httpx.Client
) -> None:
    store(engine, settings, [("1", "deliver", "2026-11-20 10:00:00"), ("2", "send", "")])
    context(engine, "1", datetime(2026, 11, 20, 7, 0, tzinfo=UTC), "0.10")
    context(engine, "2", datetime(2026, 11, 20, 7, 0, tzinfo=UTC), "0.10", text="Привет <b>")
    text = text_of(reader.get("/ui/messages/1").text)
    assert (
        "Sender name Shop Delivery name November sale Operator MTS "
        "Phone (masked by the provider) 7900123**** Sent 2026-11-20 10:00:00" in text
    )
    assert "Parts 2 Price per part 0.05 Cost 0.10" in text
    assert "Text" not in text.split("From the provider's statistics")[1].split("Tracking")[0]
    with_text = reader.get("/ui/messages/2").text
    assert 'Text</dt><dd class="sms-text">Привет &lt;b&gt;</dd>' in with_text
    assert "From the provider" not in reader.get("/ui/messages/3").text
