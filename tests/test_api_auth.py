"""API keys on every `/api/v1` endpoint, and what the OpenAPI document shows."""

from __future__ import annotations

import logging

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.api_helpers import ADMIN, READ
from tests.conftest import TEST_TOKEN, LiveServer

KEYS = ("read-key-1", "read-key-2", "admin-key-1")


def api_operations(settings: Settings) -> list[tuple[str, str]]:
    """Every (method, path) under /api/v1, path parameters filled in, read from
    the app's own route table as OpenAPI lists it, so a new endpoint is covered
    at once. (FastAPI 0.165 nests included routers in `app.routes`; the schema
    is the public, flattened view of the same table.)"""
    operations = [
        (method.upper(), path.replace("{id_sms}", "12345"))
        for path, methods in create_app(settings).openapi()["paths"].items()
        if path.startswith("/api/v1/")
        for method in methods
    ]
    assert len(operations) >= 4
    return operations


def test_every_api_endpoint_needs_a_valid_key(client: httpx.Client, settings: Settings) -> None:
    refused = [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic cmVhZC1rZXktMTo="},
        {"Authorization": "read-key-1"},
        {"Authorization": "Bearer read-key-1x"},
    ]
    for method, path in api_operations(settings):
        for headers in refused:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"] == "unauthorized", (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        for headers in (READ, {"Authorization": "Bearer read-key-1"}, ADMIN):
            response = client.request(method, path, headers=headers)
            # Past the key check (an admin-only endpoint answers a read key 403).
            assert response.status_code != 401, (method, path, response.text)
            if method == "GET" and headers is not ADMIN:
                assert response.status_code in {200, 403, 404}, (path, response.text)


def test_without_configured_keys_the_api_refuses_and_says_how_to_set_one(
    settings: Settings,
) -> None:
    bare = settings.model_copy(update={"api_keys": [], "admin_api_keys": []})
    with LiveServer(bare) as server, httpx.Client(base_url=server.url) as client:
        for method, path in api_operations(bare):
            for headers in ({}, READ):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401
                body = response.json()
                assert body["error"] == "no_api_keys_configured"
                assert "API_KEYS" in body["detail"]


def test_keys_never_reach_the_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        for key in (*KEYS, "a-wrong-key-we-must-not-log"):
            client.get("/api/v1/stats", headers={"Authorization": f"Bearer {key}"})
            client.get("/api/v1/messages/1", headers={"Authorization": f"Bearer {key}"})
    assert "/api/v1/stats" in caplog.text  # the access log did run
    for key in (*KEYS, "a-wrong-key-we-must-not-log"):
        assert key not in caplog.text


def test_openapi_documents_the_api_without_secrets(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    text = response.text
    for secret in (TEST_TOKEN, *KEYS):
        assert secret not in text
    spec = response.json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        operation = operations.get("get") or operations["post"]
        if path.startswith("/api/v1/"):
            assert operation["security"] == [{"HTTPBearer": []}], path
            assert {"200", "401", "422"} <= set(operation["responses"]), path
            error = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}
        elif path.startswith("/callbacks/"):
            assert "security" not in operation  # its secret is in the path, never shown
    assert spec["paths"]["/api/v1/messages/{id_sms}"]["get"]["responses"]["404"]
    for name in ("Message", "MessagePage", "ChangePage", "Stats"):
        assert "example" in spec["components"]["schemas"][name], name
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
