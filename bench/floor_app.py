"""The HTTP floor: a bare FastAPI endpoint on the service's uvicorn settings.

Same route shape as the callback endpoint; it reads the body and answers a
constant acknowledgement. No parsing, no database, no access log: what is left
is FastAPI and uvicorn, the least any endpoint of ours can cost.

    python -m bench.floor_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request, Response

ANSWER = b'<?xml version="1.0" encoding="utf-8" ?>\n<response>\n<id_sms>1</id_sms>\n</response>'


def create_floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/callbacks/targetsms/{token}")
    async def receive(token: str, request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/xml; charset=utf-8")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="the bare FastAPI floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # The arguments `targetsms-receiver serve` passes to uvicorn.run.
    uvicorn.run(
        "bench.floor_app:create_floor_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        server_header=False,
    )


if __name__ == "__main__":
    main()
