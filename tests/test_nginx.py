"""The nginx site from deploy/ in front of the real app: a real nginx on loopback."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from tests.conftest import CALLBACK_PATH, TEST_TOKEN, LiveServer, free_port, rows
from tests.deploy_helpers import SITE_CONF, Nginx

PUSH = (
    b'<?xml version="1.0" encoding="utf-8"?><request>'
    b'<state id_sms="700001" time="2020-01-01 12:57:46">deliver</state>'
    b'<state id_sms="700002" time="2020-01-01 12:57:46">not_deliver</state></request>'
)
FORGED = "203.0.113.9"
# The test client connects from here, so the address nginx reports is not its own.
CLIENT_ADDRESS = "127.0.0.2"
HSTS = "max-age=63072000"


def behind_proxy(settings: Settings, **changes: object) -> Settings:
    trusted = [ipaddress.ip_network("127.0.0.1/32")]
    return settings.model_copy(update={"trusted_proxies": trusted, **changes})


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Nginx, LiveServer]]:
    with LiveServer(behind_proxy(settings)) as app, Nginx(tmp_path, app.port) as nginx:
        yield nginx, app


def client(nginx: Nginx) -> httpx.Client:
    """An https client of `nginx`, trusting its certificate, from CLIENT_ADDRESS."""
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=nginx.tls_context())
    return httpx.Client(base_url=nginx.url, transport=transport, timeout=30)


def test_a_callback_through_the_proxy_is_stored_and_acknowledged(
    stack: tuple[Nginx, LiveServer], engine: Engine
) -> None:
    nginx, _ = stack
    with client(nginx) as http:
        answer = http.post(CALLBACK_PATH, content=PUSH)
    assert answer.status_code == 200
    assert "<id_sms>700001</id_sms>\n<id_sms>700002</id_sms>" in answer.text
    assert answer.headers["strict-transport-security"] == HSTS
    assert rows(engine, "SELECT id_sms, status FROM messages ORDER BY id_sms") == [
        ("700001", "deliver"),
        ("700002", "not_deliver"),
    ]
    # nginx's request id reached the app, which echoed it back.
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32
    nginx.stop()  # flushes the logs
    assert request_id in nginx.access_log.read_text()


def test_a_client_cannot_forge_its_address_through_the_proxy(
    stack: tuple[Nginx, LiveServer], engine: Engine
) -> None:
    nginx, _ = stack
    with client(nginx) as http:
        headers = {"X-Forwarded-For": FORGED}
        assert http.post(CALLBACK_PATH, content=PUSH, headers=headers).status_code == 200
    # The app believes nginx, and nginx reports the real peer.
    assert rows(engine, "SELECT remote_addr FROM documents") == [(CLIENT_ADDRESS,)]


@pytest.mark.parametrize(
    ("allowed", "forged", "expected"),
    [
        ("203.0.113.0/24", FORGED, 403),  # forged into the allowlist: refused
        ("127.0.0.2/32", None, 200),  # the real address is allowed
    ],
)
def test_the_allowlist_sees_the_real_address_behind_the_proxy(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    allowed: str,
    forged: str | None,
    expected: int,
) -> None:
    networks = [ipaddress.ip_network(allowed)]
    app_settings = behind_proxy(settings, callback_allowed_networks=networks)
    headers = {"X-Forwarded-For": forged} if forged else {}
    with (
        LiveServer(app_settings) as app,
        Nginx(tmp_path, app.port) as nginx,
        client(nginx) as http,
    ):
        answer = http.post(CALLBACK_PATH, content=PUSH, headers=headers)
    assert answer.status_code == expected
    stored = rows(engine, "SELECT count(*) FROM documents")[0][0]
    assert stored == (1 if expected == 200 else 0)
    if expected == 403:
        assert "<error>forbidden</error>" in answer.text


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_body_is_413_at_the_proxy(
    stack: tuple[Nginx, LiveServer], engine: Engine, send_length: bool
) -> None:
    nginx, _ = stack
    body = b"<request>" + b" " * (1024 * 1024) + b"</request>"
    content = body if send_length else iter([body[:65536], body[65536:]])
    with client(nginx) as http:
        answer = http.post(CALLBACK_PATH, content=content)
    assert answer.status_code == 413
    assert "nginx" in answer.text  # nginx's page: the app never saw it
    assert rows(engine, "SELECT count(*) FROM documents") == [(0,)]


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/livez",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/api/v1/admin/anything",
        "/api/v1/admin",
        "/api/v1//admin/anything",
        "/api/v1/%61dmin/anything",
    ],
)
def test_private_paths_are_not_reachable_through_the_proxy(
    stack: tuple[Nginx, LiveServer], path: str
) -> None:
    nginx, app = stack
    with client(nginx) as http:
        answer = http.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")  # nginx's, not the app's
        assert answer.headers["strict-transport-security"] == HSTS  # `always`: errors too
        # /api/ itself is passed on: the app answers (JSON).
        passed = http.get("/api/no-such-endpoint")
        assert passed.headers["content-type"].startswith("application/json")
    assert httpx.get(app.url + "/metrics").status_code == 200  # on the app port, it is there


def test_the_token_is_not_in_the_proxy_logs(
    stack: tuple[Nginx, LiveServer], tmp_path: Path
) -> None:
    nginx, _ = stack
    big = b"x" * (2 * 1024 * 1024)
    with client(nginx) as http:
        assert http.post(CALLBACK_PATH, content=PUSH).status_code == 200
        assert http.post(CALLBACK_PATH + "?a=1", content=b"<bad").status_code == 400
        assert http.post(CALLBACK_PATH, content=big).status_code == 413
        http.post(f"/Callbacks/TargetSMS/{TEST_TOKEN}", content=PUSH)  # not proxied: 404
    raw_request(nginx, f"//callbacks/targetsms/{TEST_TOKEN}")  # slashes merged
    # Upstream down: nginx's error line would quote the request line.
    dead = tmp_path / "dead"
    dead.mkdir()
    with Nginx(dead, free_port()) as orphan, client(orphan) as http:
        assert http.post(CALLBACK_PATH, content=PUSH).status_code == 502
    nginx.stop()
    logged = nginx.logs() + orphan.logs()
    assert 'POST /callbacks/targetsms/<token>" 200' in logged
    assert 'POST /callbacks/targetsms/<token>" 413' in logged
    assert 'POST /callbacks/targetsms/<token>" 502' in logged
    assert TEST_TOKEN not in logged


def raw_request(nginx: Nginx, target: str) -> bytes:
    """A request line httpx would normalise, sent as is (over TLS)."""
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as plain,
        nginx.tls_context().wrap_socket(plain, server_hostname="localhost") as sock,
    ):
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(PUSH)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + PUSH
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# --- TLS, the redirect and ACME ----------------------------------------------------------


def test_only_modern_tls_protocols_are_spoken(stack: tuple[Nginx, LiveServer]) -> None:
    nginx, _ = stack
    assert handshake(nginx, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(nginx, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(nginx, ssl.TLSVersion.TLSv1_1)


def test_the_tls_1_1_refusal_is_nginx_s(settings: Settings, tmp_path: Path) -> None:
    """Negative control: with TLS 1.1 allowed in the site, this client does connect."""
    protocols = "ssl_protocols TLSv1.2 TLSv1.3;"
    ciphers = next(
        line.strip()
        for line in SITE_CONF.read_text().splitlines()
        if line.strip().startswith("ssl_ciphers ")
    )
    changes = (
        (protocols, "ssl_protocols TLSv1.1 TLSv1.2 TLSv1.3;"),
        (ciphers, "ssl_ciphers DEFAULT:@SECLEVEL=0;"),
    )
    with Nginx(tmp_path, free_port(), changes) as nginx:
        assert handshake(nginx, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"


def handshake(nginx: Nginx, version: ssl.TLSVersion) -> str | None:
    """Connect speaking only `version`; the protocol agreed (SSLError if refused)."""
    context = nginx.tls_context()
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # else this OpenSSL refuses it itself
    with (
        socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as sock,
    ):
        return sock.version()


def test_plain_http_redirects_to_https_and_passes_nothing_on(
    stack: tuple[Nginx, LiveServer], engine: Engine
) -> None:
    nginx, _ = stack
    with httpx.Client(base_url=nginx.http_url, timeout=30) as http:
        for method, path in (("POST", CALLBACK_PATH), ("GET", "/api/v1/messages?final=true")):
            answer = http.request(method, path, content=PUSH if method == "POST" else None)
            assert answer.status_code == 301, (method, path)
            assert answer.headers["location"] == f"https://127.0.0.1{path}"
    assert rows(engine, "SELECT count(*) FROM documents") == [(0,)]
    nginx.stop()
    assert TEST_TOKEN not in nginx.logs()


def test_acme_challenges_are_served_over_plain_http(stack: tuple[Nginx, LiveServer]) -> None:
    nginx, _ = stack
    challenges = nginx.webroot / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "Tok3n_-abc").write_text("Tok3n_-abc.key-authorization")
    with httpx.Client(base_url=nginx.http_url, timeout=30) as http:
        found = http.get("/.well-known/acme-challenge/Tok3n_-abc")
        missing = http.get("/.well-known/acme-challenge/nothing")
    assert (found.status_code, found.text) == (200, "Tok3n_-abc.key-authorization")
    assert found.headers["content-type"] == "text/plain"
    assert missing.status_code == 404  # not redirected: certbot must see the 404 itself
