"""The dashboard in a real browser: Debian's chromium driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium
(`make test` installs it when missing). Without it these tests skip, except
under CI=true, where that fails. Screenshots of every page are saved under
UI_SCREENSHOTS_DIR (default: <tmp>/targetsms-ui-screenshots).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import Engine

from app.config import Settings
from app.simulator import SimulatorServer, SimulatorState
from app.webhooks import subscriptions
from tests.api_helpers import push, store, track
from tests.conftest import LiveServer, in_ci
from tests.sim_helpers import LOGIN, PASSWORD, with_provider

CHROMIUM = "/usr/bin/chromium"
# Without these chromium keeps trying to reach the network, which is refused here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PUBLIC = "https://receiver.example.test"
SCRIPT = "<script>alert(1)</script>"


def screenshots_dir() -> Path:
    path = Path(
        os.environ.get("UI_SCREENSHOTS_DIR")
        or Path(tempfile.gettempdir()) / "targetsms-ui-screenshots"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if in_ci():
            pytest.fail(f"CI=true but {CHROMIUM} is missing: run `make system-packages`")
        pytest.skip(f"{CHROMIUM} is missing (make system-packages installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs  # type: ignore[attr-defined]
    yield opened
    context.close()


def shoot(page: Page, name: str, database_url: str) -> None:
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    path = screenshots_dir() / f"{name}-{kind}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/ui/")
    expect(page).to_have_url(f"{base}/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")  # by keyboard
    expect(page).to_have_url(f"{base}/ui/")


@pytest.fixture
def seeded(settings: Settings, engine: Engine) -> Settings:
    now = datetime.now(UTC)
    store(engine, settings, [(str(300000 + i), "send", "") for i in range(12)], now)
    finals = ["deliver"] * 7 + ["not_deliver", "expired", "partly_deliver"]
    store(
        engine,
        settings,
        [(str(300000 + i), s, "2026-01-05 10:00:00") for i, s in enumerate(finals)],
        now,
    )
    track(engine, "399999", now)
    return settings


def test_read_session_sees_the_chart_finds_a_message_and_signs_out(
    seeded: Settings, page: Page
) -> None:
    with LiveServer(seeded) as live, httpx.Client(base_url=live.url) as client:
        push(client, ("300001", "deliver", "2026-01-05 10:00:00"))  # a raw document too
        sign_in(page, live.url, "read-key-1")
        chart = page.locator("figure.chart svg")
        expect(chart).to_be_visible()
        assert chart.locator("rect").count() >= 4  # one segment per status drawn
        assert int(chart.get_attribute("data-points") or 0) == 22  # 12 send + 10 final
        expect(page.locator(".period").first).to_contain_text("70.0%")
        shoot(page, "overview", seeded.database_url)

        page.get_by_role("link", name="Messages").click()
        page.get_by_label("id_sms").fill("300001\n300002, 300011")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("table.list tbody tr")).to_have_count(3)
        shoot(page, "messages", seeded.database_url)
        page.get_by_role("link", name="300001").click()
        expect(page.get_by_role("heading", name="Message 300001")).to_be_visible()
        history = page.locator("table.history tbody tr")
        expect(history).to_have_count(2)
        expect(history.nth(0)).to_contain_text("send")
        expect(history.nth(1)).to_contain_text("deliver")
        expect(history.nth(1)).to_contain_text("2026-01-05 07:00:00Z")  # UTC of Moscow 10:00
        expect(page.get_by_text("Raw callback documents")).to_have_count(0)  # admins only
        shoot(page, "message-history", seeded.database_url)

        page.get_by_role("link", name="Callback URL").first.click()
        expect(page.get_by_role("button", name="Register the expected URL")).to_have_count(0)
        shoot(page, "callback-url-read", seeded.database_url)

        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{live.url}/ui/login")
        page.goto(f"{live.url}/ui/messages")
        expect(page).to_have_url(f"{live.url}/ui/login")
        shoot(page, "login", seeded.database_url)


def test_admin_registers_the_callback_url_with_the_button(settings: Settings, page: Page) -> None:
    with SimulatorServer(SimulatorState(LOGIN, PASSWORD)) as sim:
        configured = with_provider(settings, sim, public_url=PUBLIC)
        with LiveServer(configured) as live:
            sign_in(page, live.url, "admin-key-1")
            page.get_by_role("link", name="Callback URL").first.click()
            page.get_by_role("button", name="Ask the provider now").click()
            expect(page.locator("#provider-matches")).to_have_text("no")
            page.get_by_role("button", name="Register the expected URL").click()
            expect(page.get_by_role("heading", name="Registered: the provider's read-back"))
            expect(page.locator("#provider-url")).to_have_text(
                f"{PUBLIC}/callbacks/targetsms/<token>"
            )
            expect(page.locator("#provider-matches")).to_have_text("yes")
            token = configured.callback_token.get_secret_value()  # type: ignore[union-attr]
            assert sim.state.callback_url == f"{PUBLIC}/callbacks/targetsms/{token}"
            assert token not in page.content()  # the page never shows the token
            shoot(page, "callback-url-registered", settings.database_url)


def test_a_script_in_a_status_is_shown_as_text_and_never_runs(
    settings: Settings, engine: Engine, page: Page
) -> None:
    store(engine, settings, [("310000", SCRIPT, "<b>2026</b>")])
    with LiveServer(settings) as live:
        sign_in(page, live.url, "admin-key-1")
        for path in ("/ui/", "/ui/messages", "/ui/messages/310000"):
            page.goto(live.url + path)
            expect(page.get_by_text(SCRIPT).first).to_be_visible()
        expect(page.get_by_text("<b>2026</b>").first).to_be_visible()
        page.wait_for_timeout(300)
        assert page.dialogs == []  # type: ignore[attr-defined]
        assert page.locator("main script").count() == 0


def test_admin_buttons_are_absent_for_a_read_session_and_forged_posts_get_403(
    settings: Settings, page: Page
) -> None:
    with LiveServer(settings) as live:
        sign_in(page, live.url, "read-key-1")
        page.goto(f"{live.url}/ui/callback-url")
        assert page.locator("form[action='/ui/callback-url/register']").count() == 0
        token = page.locator("input[name=csrf]").first.input_value()
        # Forged by hand, with the session's own cookie and CSRF token.
        forged = page.request.post(
            f"{live.url}/ui/callback-url/register", form={"csrf": token, "force": "yes"}
        )
        assert forged.status == 403
        no_token = page.request.post(f"{live.url}/ui/preferences", form={"language": "ru"})
        assert no_token.status == 403
        page.reload()
        expect(page.get_by_role("heading", name="Callback URL")).to_be_visible()  # still English


def test_a_post_without_its_csrf_token_gets_403(settings: Settings, page: Page) -> None:
    with LiveServer(settings) as live:
        sign_in(page, live.url, "admin-key-1")
        page.goto(f"{live.url}/ui/callback-url")
        page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
        page.get_by_role("button", name="Register the expected URL").click()
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("CSRF")


def test_the_overview_refreshes_its_figures_without_a_reload(
    settings: Settings, engine: Engine, page: Page
) -> None:
    quick = Settings(**(settings.model_dump() | {"ui_refresh_seconds": 1}), _env_file=None)  # type: ignore[arg-type]
    with LiveServer(quick) as live:
        sign_in(page, live.url, "read-key-1")
        page.evaluate("window.notReloaded = true")
        expect(page.locator("figure.chart figcaption")).to_contain_text("Nothing received")
        store(engine, settings, [("320000", "deliver", "2026-01-05 10:00:00")])
        expect(page.locator("figure.chart svg rect.s-deliver")).to_have_count(1, timeout=10_000)
        assert page.evaluate("window.notReloaded") is True


def test_russian_from_the_switch_with_status_meanings(
    settings: Settings, engine: Engine, page: Page
) -> None:
    store(
        engine,
        settings,
        [
            ("330000", "deliver", "2026-01-05 10:00:00"),
            ("330001", "expired", "2026-01-05 10:00:00"),
        ],
    )
    with LiveServer(settings) as live:
        sign_in(page, live.url, "read-key-1")
        page.get_by_label("Language").select_option("ru")
        page.get_by_label("Time zone").fill("Asia/Yekaterinburg")
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_role("heading", name="Сводка")).to_be_visible()
        expect(page.locator(".zone-note")).to_contain_text("Asia/Yekaterinburg (UTC+05:00)")
        expect(page.get_by_text("доставлено", exact=True).first).to_be_visible()
        expect(page.get_by_text("просрочено", exact=False).first).to_be_visible()
        page.goto(f"{live.url}/ui/messages/330000")
        expect(page.locator("table.history")).to_contain_text(
            "2026-01-05 12:00:00"
        )  # Yekaterinburg
        shoot(page, "message-ru", settings.database_url)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live.url}/ui/")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # no sideways scrolling at phone width
        shoot(page, "overview-phone", settings.database_url)


def test_admin_pauses_and_resumes_a_webhook_subscription(
    settings: Settings, engine: Engine, page: Page
) -> None:
    created = subscriptions.create(engine, "https://crm.example.org/hooks/sms", final_only=True)
    sub_id = created.view["id"]
    quiet = Settings(**(settings.model_dump() | {"webhook_delivery": False}), _env_file=None)  # type: ignore[arg-type]
    with LiveServer(quiet) as live:
        sign_in(page, live.url, "admin-key-1")
        page.get_by_role("link", name="Webhooks").first.click()
        expect(page).to_have_url(f"{live.url}/ui/webhooks")
        state = page.locator(f"#sub-{sub_id} dd.state")
        expect(state).to_have_text("enabled")
        shoot(page, "webhooks", settings.database_url)
        page.locator(f"#pause-{sub_id}").click()
        expect(page.locator("#webhook-result")).to_have_text("Paused.")
        expect(state).to_have_text("disabled: paused")
        assert subscriptions.get(engine, sub_id)["enabled"] is False
        page.locator(f"#resume-{sub_id}").click()
        expect(page.locator("#webhook-result")).to_have_text("Resumed from its cursor.")
        expect(state).to_have_text("enabled")
        assert subscriptions.get(engine, sub_id)["enabled"] is True
        assert created.secret not in page.content()
