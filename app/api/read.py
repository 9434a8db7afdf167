"""The read API under `/api/v1`: messages, the change feed, statistics."""

from __future__ import annotations

from fastapi import APIRouter

from app.api import changes, messages, stats

API_PREFIX = "/api/v1"

router = APIRouter(prefix=API_PREFIX)
router.include_router(messages.router)
router.include_router(changes.router)
router.include_router(stats.router)
