"""What a running app holds: built in the lifespan, reached through `get_runtime`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from app.api.body import BodiesInFlight
from app.config import Settings
from app.health import Health
from app.webhooks.delivery import Deliverer
from app.writer import Writer


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    writer: Writer
    callback_token: str
    health: Health
    bodies: BodiesInFlight  # request bodies being read: their memory and deadlines
    deliverer: Deliverer  # outbound webhooks (running unless WEBHOOK_DELIVERY=false)


async def get_runtime(connection: HTTPConnection) -> Runtime:
    # async: FastAPI runs a plain `def` dependency in its threadpool, a thread
    # hand-off on every request for what is an attribute read.
    runtime: Runtime = connection.app.state.runtime
    return runtime
