"""The dashboard behind the nginx site from deploy/: only the networks it allows get in."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.config import Settings
from tests.conftest import LiveServer
from tests.deploy_helpers import Nginx, substitute
from tests.test_nginx import behind_proxy


def get(nginx: Nginx, path: str, source: str) -> httpx.Response:
    # The site is served over TLS with a certificate made for the test.
    transport = httpx.HTTPTransport(local_address=source, verify=nginx.tls_context())
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.get(nginx.url + path)


def test_the_dashboard_is_served_to_internal_networks(settings: Settings, tmp_path: Path) -> None:
    with LiveServer(behind_proxy(settings)) as app, Nginx(tmp_path, app.port) as nginx:
        page = get(nginx, "/ui/login", "127.0.0.2")
        assert page.status_code == 200 and "API key" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert get(nginx, "/ui/static/ui.css", "127.0.0.2").status_code == 200


def test_other_networks_are_refused_by_nginx(settings: Settings, tmp_path: Path) -> None:
    with LiveServer(behind_proxy(settings)) as app:
        nginx = Nginx(tmp_path, app.port)
        # Loopback is all one can connect from here: narrow the allowed range to
        # 127.0.0.1 and come from 127.0.0.2, as a client outside would.
        site = tmp_path / "site.conf"
        site.write_text(substitute(site.read_text(), "allow 127.0.0.0/8;", "allow 127.0.0.1/32;"))
        with nginx:
            assert get(nginx, "/ui/login", "127.0.0.2").status_code == 403
            assert get(nginx, "/ui/login", "127.0.0.1").status_code == 200
            callback_api = get(nginx, "/api/v1/messages", "127.0.0.2")
            assert callback_api.status_code == 401  # the rest of the site is unchanged
