"""Dependency aliases shared by the routes, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.runtime import Runtime, get_runtime

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
