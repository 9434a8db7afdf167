"""`targetsms-receiver webhooks ...`: the operator's way to manage subscriptions."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine

from app.cli import main
from app.config import Settings
from app.feed import read_changes
from tests.api_helpers import store
from tests.webhook_helpers import webhook_environment, webhook_settings


def run(settings: Settings, *args: str) -> tuple[int, str]:
    env = webhook_environment(settings) | {"WEBHOOK_ALLOWED_NETWORKS": ""}
    result = CliRunner().invoke(main, ["webhooks", *args], env=env)
    return result.exit_code, result.output


def loaded(output: str) -> Any:
    return json.loads(output)


def test_add_list_rotate_replay_pause_resume_remove(settings: Settings, engine: Engine) -> None:
    hook_settings = webhook_settings(settings)
    code, output = run(hook_settings, "add", "http://127.0.0.1:9/hook")
    assert code == 2 and "webhook_target_refused" in output and "loopback" in output

    code, output = run(hook_settings, "add", "https://10.1.2.3/hook", "--status", "deliver")
    assert code == 0, output
    created = loaded(output)
    assert created["secret"].startswith("whsec_") and created["statuses"] == ["deliver"]
    sub = str(created["id"])

    code, output = run(hook_settings, "list")
    assert code == 0 and created["secret"] not in output
    assert [s["id"] for s in loaded(output)] == [created["id"]]

    code, output = run(hook_settings, "rotate", sub)
    rotated = loaded(output)
    assert code == 0 and rotated["secret"] not in (created["secret"], "")

    store(engine, settings, [("42", "deliver", "2026-11-25 10:00:00")])
    cursor = read_changes(engine, 0, 1)[0]["cursor"]
    code, output = run(hook_settings, "replay", sub, "--since", "2000-01-01")
    assert code == 0 and loaded(output)["lag_events"] == 1
    code, output = run(hook_settings, "replay", sub, "--after", cursor)
    assert code == 0 and loaded(output)["cursor"] == cursor
    code, output = run(hook_settings, "replay", sub, "--after", "nonsense")
    assert code == 2 and "cursor" in output
    code, output = run(hook_settings, "replay", sub)
    assert code == 2

    code, output = run(hook_settings, "pause", sub)
    assert code == 0 and loaded(output)["disabled_reason"] == "paused"
    code, output = run(hook_settings, "resume", sub)
    assert code == 0 and loaded(output)["enabled"] is True

    code, output = run(hook_settings, "remove", sub)
    assert code == 0
    code, output = run(hook_settings, "remove", sub)
    assert code == 1 and "no such webhook" in output
