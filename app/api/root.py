"""`GET /`: where a person who opens the service's address should go next."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

router = APIRouter(tags=["operations"])


class Pointers(BaseModel):
    service: str = Field(examples=["targetsms-receiver"])
    docs: str = Field(description="The interactive API documentation.", examples=["/docs"])
    openapi: str = Field(description="The OpenAPI document.", examples=["/openapi.json"])


@router.get("/", summary="Pointers to the documentation", response_model=Pointers)
async def root() -> Pointers:
    return Pointers(service="targetsms-receiver", docs="/docs", openapi="/openapi.json")
