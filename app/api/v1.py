"""The versioned API: every route under `/api/v1`, mounted once here.

A new group of routes is an `APIRouter` without a version prefix in a module
of its own, included below; `main` includes only this router.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api import admin, changes, costs, messages, reconciliations, stats, tracking, webhooks

PREFIX = "/api/v1"

router = APIRouter(prefix=PREFIX)
router.include_router(messages.router)
router.include_router(changes.router)
router.include_router(stats.router)
router.include_router(tracking.router)
router.include_router(admin.router)
router.include_router(webhooks.router)
router.include_router(reconciliations.router)
router.include_router(costs.router)
