"""The admin API's webhook routes: answers, errors, and the OpenAPI document."""

from __future__ import annotations

import httpx

from app.config import Settings
from tests.api_helpers import ADMIN
from tests.conftest import LiveServer

WEBHOOKS = "/api/v1/admin/webhooks"


def test_crud_and_errors(settings: Settings) -> None:
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as client:
        body = {"url": "https://10.0.0.7/hook", "statuses": ["deliver", "expired"]}
        created = client.post(WEBHOOKS, json=body, headers=ADMIN)
        assert created.status_code == 201
        sub = created.json()
        assert sub["statuses"] == ["deliver", "expired"] and sub["enabled"] is True
        path = f"{WEBHOOKS}/{sub['id']}"

        patched = client.patch(path, json={"final_only": True, "description": "x"}, headers=ADMIN)
        assert patched.status_code == 200
        assert (patched.json()["final_only"], patched.json()["description"]) == (True, "x")
        assert patched.json()["statuses"] == ["deliver", "expired"]  # left as it was
        paused = client.patch(path, json={"enabled": False}, headers=ADMIN).json()
        assert paused["disabled_reason"] == "paused"
        resumed = client.patch(path, json={"enabled": True}, headers=ADMIN).json()
        assert resumed["enabled"] is True and resumed["disabled_reason"] is None

        for bad in ({"enabled": None}, {"nope": 1}, {"statuses": [""]}):
            answer = client.patch(path, json=bad, headers=ADMIN)
            assert answer.status_code == 422 and answer.json()["error"] == "invalid_parameters"
        assert client.post(WEBHOOKS, json={}, headers=ADMIN).status_code == 422

        assert client.delete(path, headers=ADMIN).status_code == 204
        for method, suffix, json in [
            ("GET", "", None),
            ("PATCH", "", {"enabled": True}),
            ("DELETE", "", None),
            ("POST", "/rotate-secret", None),
            ("POST", "/replay", {"since": "2026-01-01T00:00:00Z"}),
            ("GET", "/attempts", None),
        ]:
            answer = client.request(method, path + suffix, json=json, headers=ADMIN)
            assert answer.status_code == 404, (method, suffix)
            assert answer.json() == {
                "error": "webhook_not_found",
                "detail": "No such webhook subscription.",
            }
        huge = client.get(f"{WEBHOOKS}/{2**64}", headers=ADMIN)
        assert huge.status_code == 422 and huge.json()["error"] == "invalid_parameters"
        assert client.get(WEBHOOKS, headers=ADMIN).json() == []
        assert client.get(WEBHOOKS).status_code == 401


def test_openapi_documents_the_routes_with_fake_examples(settings: Settings) -> None:
    with LiveServer(settings) as server:
        document = httpx.get(server.url + "/openapi.json").json()
    paths = document["paths"]
    assert {"get", "post"} <= set(paths[WEBHOOKS])
    assert {"get", "patch", "delete"} <= set(paths[WEBHOOKS + "/{webhook_id}"])
    for suffix in ("/rotate-secret", "/replay", "/attempts"):
        assert WEBHOOKS + "/{webhook_id}" + suffix in paths
    assert "422" in paths[WEBHOOKS]["post"]["responses"]
