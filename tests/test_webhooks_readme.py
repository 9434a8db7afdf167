"""The README's consumer example, run as written, receives and verifies real deliveries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.config import Settings
from tests.api_helpers import ADMIN, push
from tests.conftest import LiveServer, free_port
from tests.deploy_helpers import ROOT
from tests.webhook_helpers import webhook_settings

MARKER = "<!-- webhook-consumer-example"


def consumer_code() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, flags=re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_consumer_verifies_real_deliveries(settings: Settings, tmp_path: Path) -> None:
    script = tmp_path / "consumer.py"
    script.write_text(consumer_code())
    port = free_port()
    with LiveServer(webhook_settings(settings)) as server, httpx.Client(base_url=server.url) as api:
        created = api.post(
            "/api/v1/admin/webhooks",
            json={"url": f"http://127.0.0.1:{port}/hook", "final_only": True},
            headers=ADMIN,
        ).json()
        env = os.environ | {"WEBHOOK_SECRET": created["secret"], "PORT": str(port)}
        out = tmp_path / "consumer.out"
        with out.open("wb") as sink:
            consumer = subprocess.Popen(
                [sys.executable, str(script)], env=env, stdout=sink, stderr=subprocess.DEVNULL
            )
        try:
            push(api, ("31", "send", ""), ("31", "deliver", "2026-11-25 10:00:00"))
            push(api, ("32", "expired", "2026-11-25 10:00:01"))
            deadline = time.monotonic() + 30
            while out.read_text().count("\n") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            consumer.kill()
            consumer.wait()
    lines = out.read_text().splitlines()
    assert lines == ["31 deliver 2026-11-25T07:00:00Z", "32 expired 2026-11-25T07:00:01Z"], lines
