"""Dashboard sign-in and sessions over real HTTP, on both databases."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.ui.session import COOKIE
from tests.conftest import LiveServer, rows
from tests.ui_helpers import csrf_of, page_csrf, sign_in


def variant(settings: Settings, **changes: object) -> Settings:
    return Settings(**(settings.model_dump() | changes), _env_file=None)  # type: ignore[arg-type]


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def session_cookie(response: httpx.Response) -> str:
    header = next(h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE))
    return header


@pytest.mark.parametrize(
    ("key", "role"), [("read-key-1", "read only"), ("admin-key-1", "administrator")]
)
def test_sign_in_with_a_read_or_an_admin_key(http: httpx.Client, key: str, role: str) -> None:
    assert http.get("/ui/").headers["location"] == "/ui/login"
    response = sign_in(http, key)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    page = http.get("/ui/")
    assert page.status_code == 200
    assert f"Signed in: {role}" in page.text


def test_the_cookie_holds_no_key_and_has_the_safe_flags(http: httpx.Client) -> None:
    header = session_cookie(sign_in(http, "admin-key-1"))
    value = http.cookies[COOKIE]
    assert "admin-key-1" not in header
    # itsdangerous payloads are base64 JSON: decode it and look inside too.
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert set(payload) == {"k", "r", "c"} and payload["r"] == "admin"
    assert "admin-key-1" not in json.dumps(payload)
    flags = header.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "max-age=43200" in flags
    assert "path=/ui/" in flags and "secure" not in flags  # plain http here


def test_secure_cookie_when_a_trusted_proxy_says_https(settings: Settings) -> None:
    trusted = variant(settings, trusted_proxies=["127.0.0.1/32"])
    with LiveServer(trusted) as live, httpx.Client(base_url=live.url) as http:
        proto = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.7"}
        form = http.get("/ui/login", headers=proto)
        assert "secure" in session_cookie(form).lower()
        # httpx (rightly) keeps a Secure cookie off plain http: send it by hand.
        anonymous = session_cookie(form).split(";")[0]
        response = http.post(
            "/ui/login",
            data={"csrf": csrf_of(form.text), "key": "read-key-1"},
            headers=proto | {"Cookie": anonymous},
        )
        assert response.status_code == 303
        assert "secure" in session_cookie(response).lower()


def test_untrusted_proxy_headers_do_not_make_the_cookie_secure(http: httpx.Client) -> None:
    form = http.get("/ui/login", headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in session_cookie(form).lower()


def test_a_wrong_key_is_refused_and_logged_without_the_key(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.ui")
    response = sign_in(http, "not-a-key-Zx81")
    assert response.status_code == 401
    assert "not one of API_KEYS" in response.text
    assert "sign-in failed" in caplog.text and "127.0.0.1" in caplog.text
    assert "not-a-key-Zx81" not in caplog.text
    assert http.get("/ui/").status_code == 303


def test_sign_in_attempts_are_limited_per_client(settings: Settings) -> None:
    with (
        LiveServer(variant(settings, ui_login_attempts_per_minute=3)) as live,
        httpx.Client(base_url=live.url) as http,
    ):
        codes = [sign_in(http, "wrong").status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        limited = sign_in(http, "read-key-1")  # even the right key waits
        assert limited.status_code == 429
        assert "Too many attempts" in limited.text


def test_a_post_without_its_csrf_token_is_refused(http: httpx.Client) -> None:
    http.get("/ui/login")
    assert http.post("/ui/login", data={"key": "read-key-1"}).status_code == 403
    assert http.post("/ui/login", data={"key": "read-key-1", "csrf": "x"}).status_code == 403
    sign_in(http, "admin-key-1")
    refused = http.post("/ui/callback-url/check", data={})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert http.post("/ui/logout", data={}).status_code == 403


def test_a_read_session_cannot_use_admin_actions_even_with_its_token(http: httpx.Client) -> None:
    sign_in(http, "read-key-1")
    token = page_csrf(http, "/ui/callback-url")
    page = http.get("/ui/callback-url").text
    assert "/ui/callback-url/register" not in page  # no button
    for action in ("/ui/callback-url/register", "/ui/callback-url/check"):
        forged = http.post(action, data={"csrf": token})
        assert forged.status_code == 403
        assert "ADMIN_API_KEYS" in forged.text


def test_a_post_with_no_session_is_refused(http: httpx.Client) -> None:
    assert http.post("/ui/callback-url/register", data={"csrf": "x"}).status_code == 403


def test_sign_out_ends_the_session(http: httpx.Client) -> None:
    sign_in(http, "read-key-1")
    token = page_csrf(http)
    response = http.post("/ui/logout", data={"csrf": token})
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert http.get("/ui/").status_code == 303


def test_a_session_ends_when_its_key_is_removed(settings: Settings) -> None:
    with LiveServer(settings) as first, httpx.Client(base_url=first.url) as http:
        sign_in(http, "read-key-2")
        cookie = http.cookies[COOKIE]
        assert http.get("/ui/").status_code == 200
    jar = {COOKIE: cookie}
    with LiveServer(settings) as same, httpx.Client(base_url=same.url, cookies=jar) as http:
        assert http.get("/ui/").status_code == 200  # the same secret, kept in the database
    removed = variant(settings, api_keys=["read-key-1"])
    with LiveServer(removed) as after, httpx.Client(base_url=after.url, cookies=jar) as http:
        assert http.get("/ui/").headers["location"] == "/ui/login"


def test_an_admin_key_moved_to_the_read_list_ends_its_admin_session(settings: Settings) -> None:
    with LiveServer(settings) as first, httpx.Client(base_url=first.url) as http:
        sign_in(http, "admin-key-1")
        jar = {COOKIE: http.cookies[COOKIE]}
    moved = variant(settings, api_keys=["admin-key-1"], admin_api_keys=[])
    with LiveServer(moved) as after, httpx.Client(base_url=after.url, cookies=jar) as http:
        assert http.get("/ui/").status_code == 303


def test_the_session_expires(settings: Settings) -> None:
    short = variant(settings, session_max_age_hours=1 / 3600)  # one second
    with LiveServer(short) as live, httpx.Client(base_url=live.url) as http:
        sign_in(http, "read-key-1")
        assert http.get("/ui/").status_code == 200
        time.sleep(2.1)
        assert http.get("/ui/").status_code == 303


def test_a_tampered_cookie_is_no_session(http: httpx.Client) -> None:
    sign_in(http, "read-key-1")
    value = http.cookies[COOKIE]
    http.cookies.clear()
    http.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert http.get("/ui/").status_code == 303


def test_the_session_secret_is_generated_once_and_kept(settings: Settings, engine: Engine) -> None:
    query = "SELECT value FROM instance_settings WHERE key = 'ui.session_secret'"
    with LiveServer(settings) as live:
        assert rows(engine, query) == []  # not at start: the database may be down then
        assert httpx.get(f"{live.url}/ui/login").status_code == 200
    first = rows(engine, query)
    with LiveServer(settings) as live:
        assert httpx.get(f"{live.url}/ui/login").status_code == 200
    assert rows(engine, query) == first
    assert len(str(first[0][0])) >= 40


def test_the_dashboard_answers_503_while_the_database_is_down(settings: Settings) -> None:
    down = variant(settings, database_url="postgresql://postgres@127.0.0.1:9/none")
    with LiveServer(down) as live:
        response = httpx.get(f"{live.url}/ui/login", timeout=30)
    assert response.status_code == 503 and "database" in response.text


def test_session_secret_setting_signs_sessions(settings: Settings, engine: Engine) -> None:
    signed = variant(settings, session_secret="s" * 40)
    with LiveServer(signed) as live, httpx.Client(base_url=live.url) as http:
        sign_in(http, "read-key-1")
        jar = {COOKIE: http.cookies[COOKIE]}
    assert rows(engine, "SELECT value FROM instance_settings WHERE key = 'ui.session_secret'") == []
    other = variant(settings, session_secret="t" * 40)
    with LiveServer(other) as live, httpx.Client(base_url=live.url, cookies=jar) as http:
        assert http.get("/ui/").status_code == 303  # signed with another secret


def test_pages_carry_a_strict_content_security_policy(http: httpx.Client) -> None:
    for path in ("/ui/login", "/ui/static/ui.css", "/ui/static/ui.js"):
        response = http.get(path)
        assert response.status_code == 200
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert response.headers["x-content-type-options"] == "nosniff"
    page = http.get("/ui/login").text
    assert "<style" not in page and "style=" not in page
    assert "<script>" not in page and '<script src="/ui/static/ui.js"' in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere


def test_the_preferences_form_sets_language_and_zone(http: httpx.Client) -> None:
    sign_in(http, "read-key-1")
    token = page_csrf(http)
    response = http.post(
        "/ui/preferences",
        data={"csrf": token, "language": "ru", "zone": "Asia/Tokyo", "back": "/ui/messages"},
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/messages"
    page = http.get("/ui/messages").text
    assert "Сообщения" in page and "Asia/Tokyo (UTC+09:00)" in page
    away = http.post("/ui/preferences", data={"csrf": token, "back": "//evil.example/x"})
    assert away.headers["location"] == "/ui/"
    odd = http.post("/ui/preferences", data={"csrf": token, "zone": "../../etc/passwd"})
    assert odd.status_code == 303
    assert "Asia/Tokyo" in http.get("/ui/").text
