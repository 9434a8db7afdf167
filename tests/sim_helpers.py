"""Shared set-up for the tests that talk to the simulator: settings and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from app.config import Settings
from app.simulator import SimulatorServer

LOGIN = "sim-login"
# Distinctive, so that a leak anywhere in a log or an output is found by search.
PASSWORD = "pw-Zq7xK3-never-logged"
READ = {"Authorization": "Bearer read-key-1"}
ADMIN = {"Authorization": "Bearer admin-key-1"}
CLI = [str(Path(sys.executable).parent / "targetsms-receiver")]


def with_provider(settings: Settings, sim: SimulatorServer | str, **extra: object) -> Settings:
    """`settings` pointed at the simulator (or at an API URL), with its credentials."""
    values: dict[str, object] = {
        "targetsms_login": LOGIN,
        "targetsms_password": PASSWORD,
        "targetsms_api_url": sim if isinstance(sim, str) else sim.api_url,
    }
    return Settings(
        **(settings.model_dump() | values | extra),  # type: ignore[arg-type]
        _env_file=None,
    )


def environment(settings: Settings) -> dict[str, str]:
    """The environment variables that give a CLI process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TARGETSMS_", "POLL_"))}
    env |= {
        "DATABASE_URL": settings.database_url,
        "CALLBACK_TOKEN": settings.callback_token.get_secret_value()
        if settings.callback_token
        else "",
        "TARGETSMS_LOGIN": settings.targetsms_login,
        "TARGETSMS_PASSWORD": settings.targetsms_password.get_secret_value(),
        "TARGETSMS_API_URL": settings.targetsms_api_url,
        "PUBLIC_URL": settings.public_url,
        "POLL_AFTER_SECONDS": str(settings.poll_after_seconds),
        "POLL_BATCH_SIZE": str(settings.poll_batch_size),
        "POLL_INTERVAL_SECONDS": str(settings.poll_interval_seconds),
        "POLL_MAX_AGE_HOURS": str(settings.poll_max_age_hours),
        "LOG_LEVEL": "DEBUG",
    }
    return env


def run_cli(
    settings: Settings, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=environment(settings),
        cwd=tempfile.gettempdir(),  # away from any .env file
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
