"""Request and response bodies of the HTTP API (pydantic), which FastAPI validates (422) and documents (OpenAPI)."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, Field, StrictInt, StrictStr

MAX_K = 1000
MAX_BATCH_USERS = 1000

# A user or item id in the run's own id space. Strict, so true/false/3.0 are rejected (422) rather
# than silently turned into 1/0/3; lookups compare str(id), so "3" and 3 name the same user.
Id = Union[StrictInt, StrictStr]


class ScoredItem(BaseModel):
    item: Id = Field(description="Item id in the run's id space (a JSON int when the run's ids are integers).")
    score: float = Field(description="Inner-product score (codes x scales for quantized runs).")


class UserRecommendations(BaseModel):
    user: Id
    items: list[ScoredItem] = Field(description="Best first; fewer than k when the user has seen almost everything.")


class SimilarItems(BaseModel):
    item: Id
    items: list[ScoredItem] = Field(description="Best first; the item itself is never included.")


class BatchRequest(BaseModel):
    users: list[Id] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True


class BatchEntry(UserRecommendations):
    error: Optional[str] = Field(None, description="Set (and items empty) when the user is unknown to the run.")


class BatchResponse(BaseModel):
    results: list[BatchEntry] = Field(description="One entry per requested user, in request order.")
    unknown_users: list[Id] = Field(description="The requested ids the run does not know, in request order.")


class ReloadRequest(BaseModel):
    run_dir: str = Field(min_length=1, description="A finished run directory on the server's file system.")


class Metadata(BaseModel):
    model: str
    quantized: bool
    bits: int
    dim: int
    users: int
    items: int
    memory: dict[str, Any] = Field(description='metrics.json "memory": bytes per user / item and the ratio to float32.')
    run_dir: str
    loaded_at: str = Field(description="When this run was loaded (UTC, ISO 8601).")
