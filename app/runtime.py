"""What a running app holds: built in the lifespan, reached through `get_runtime`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from app.config import Settings
from app.writer import Writer


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    writer: Writer
    callback_token: str


def get_runtime(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime
