"""The service's settings: environment variables, optionally a `.env` file.

Every field is listed in the README with its default; keep the two in step.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Storage and the callback endpoint.
    database_url: str = "sqlite:///./targetsms-receiver.db"
    callback_token: SecretStr | None = None
    # Also accepted while the provider is moved to a new token (README, runbook).
    callback_token_previous: SecretStr | None = None
    targetsms_timezone: str = "Europe/Moscow"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_states_per_document: int = Field(default=10_000, gt=0)
    raw_retention_days: int = Field(default=30, ge=1)
    # Half of 32 connections' 100-state documents: with SQLite's commits in a
    # process of their own, the server parses the next batch while the child
    # commits this one (one batch of every waiting document left them taking
    # turns: 526-556 against 616-714 req/s, bench/RESULTS.md "Fifth pass").
    write_batch_max_states: int = Field(default=1_600, gt=0)
    write_timeout_seconds: float = Field(default=10.0, gt=0)
    db_connect_timeout_seconds: int = Field(default=3, gt=0)
    db_pool_size: int = Field(default=10, gt=0)

    # Read API (issue 3) and admin API (issue 4).
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = []

    # The provider's XML API (issue 4).
    targetsms_login: str = ""
    targetsms_password: SecretStr = SecretStr("")
    targetsms_api_url: str = "https://sms.targetsms.ru/xml/"
    public_url: str = ""
    poll_after_seconds: int = Field(default=1800, ge=0)
    poll_max_age_hours: int = Field(default=72, gt=0)
    poll_batch_size: int = Field(default=200, gt=0)
    poll_interval_seconds: float = Field(default=60.0, gt=0)

    # Deployment (issue 5).
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = []
    callback_allowed_networks: Annotated[list[IPNetwork], NoDecode] = []
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    shutdown_timeout_seconds: int = Field(default=20, gt=0)
    shutdown_delay_seconds: float = Field(default=0.0, ge=0)

    # Slow and stalled request bodies (issue 9).
    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    max_bodies_in_flight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    # Self-healing and `doctor` (issue 12). Minutes may be fractions (tests use seconds).
    callback_silence_minutes: float = Field(default=30.0, gt=0)
    poll_after_seconds_when_silent: int = Field(default=120, ge=0)
    callback_url_check_minutes: float = Field(default=60.0, gt=0)
    callback_url_autofix: bool = False
    account_check_minutes: float = Field(default=60.0, gt=0)
    balance_warn_below: Decimal | None = None

    # Outbound webhooks (issue 11, app/webhooks/).
    webhook_delivery: bool = True
    webhook_batch_size: int = Field(default=100, gt=0, le=1000)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_retry_hours: float = Field(default=72.0, gt=0)
    webhook_retry_schedule_seconds: Annotated[list[float], NoDecode] = [
        5,
        30,
        120,
        600,
        1800,
        3600,
    ]
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0)
    webhook_allow_http: bool = False
    webhook_allowed_networks: Annotated[list[IPNetwork], NoDecode] = []
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)
    webhook_attempt_retention_days: int = Field(default=7, ge=1)

    @field_validator("webhook_retry_schedule_seconds", "webhook_allowed_networks", mode="before")
    @classmethod
    def _webhook_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("webhook_retry_schedule_seconds", mode="after")
    @classmethod
    def _webhook_schedule(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("give one or more positive delays in seconds")
        return value

    @field_validator("webhook_allowed_networks", mode="after")
    @classmethod
    def _webhook_networks(cls, value: list[IPNetwork]) -> list[IPNetwork]:
        return [ipaddress.ip_network(net, strict=False) for net in value]

    # Reconciliation against stats.php (issue 12).
    reconcile_interval_minutes: int = Field(default=360, ge=0)  # 0: the poller does not run it
    reconcile_window_minutes: int = Field(default=1440, ge=1, le=1440)  # the first window asked
    reconcile_store_text: bool = False  # the text is personal data

    # --- dashboard (issue 13, app/ui/) ---
    # Signs the dashboard's session cookies; unset: generated once, kept in the database.
    session_secret: SecretStr | None = None
    session_max_age_hours: float = Field(default=12.0, gt=0)
    ui_login_attempts_per_minute: int = Field(default=10, gt=0)
    ui_refresh_seconds: float = Field(default=15.0, gt=0)

    @field_validator(
        "api_keys", "admin_api_keys", "trusted_proxies", "callback_allowed_networks", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("trusted_proxies", "callback_allowed_networks", mode="after")
    @classmethod
    def _networks(cls, value: list[IPNetwork]) -> list[IPNetwork]:
        return [ipaddress.ip_network(net, strict=False) for net in value]

    @field_validator("targetsms_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.targetsms_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
