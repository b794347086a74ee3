"""HTTP fold-in: ``POST /recommend/by-items`` (anonymous sessions), ``POST /users`` and ``POST /items`` (docs/serving.md)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .schemas import MAX_K, Id

log = logging.getLogger("hqgnn.serve")

MAX_SESSION_ITEMS = 1000  # items of one anonymous session
MAX_NEW_NODES = 1000  # users (or items) added by one POST
MAX_NEW_INTERACTIONS = 100_000  # interactions of one POST, all nodes together
STATUS = {"unknown": 404, "duplicate": 409, "invalid": 422}


class ByItemsRequest(BaseModel):
    items: list[Id] = Field(min_length=1, max_length=MAX_SESSION_ITEMS, description="The session's items.")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="Leave out the session's own items.")


class NewNode(BaseModel):
    id: Id = Field(description="The new user's (item's) id; 409 if the run already has it.")
    interactions: list[Id] = Field(
        min_length=1,
        max_length=MAX_SESSION_ITEMS,
        description="Known items of the new user (known users of the new item).",
    )


class AddNodesRequest(BaseModel):
    nodes: list[NewNode] = Field(min_length=1, max_length=MAX_NEW_NODES)


def register_foldin_routes(app: FastAPI, api_key: str | None) -> None:
    """Add the fold-in routes to ``app`` (whose ``state.holder`` is the :class:`ModelHolder`)."""
    holder = app.state.holder
    grow_lock = threading.Lock()  # one grow at a time: read snapshot, write run, reload
    cache: dict[int, Any] = {}  # id(snapshot) -> its FoldIn (the lstsq map is fitted once per served run)

    def foldin_of(snap: Any) -> Any:
        from ..foldin import FoldIn

        fi = cache.get(id(snap.run))
        if fi is None or fi.run is not snap.run:
            cache.clear()
            fi = cache[id(snap.run)] = FoldIn(snap.run)
        return fi

    @app.post("/recommend/by-items", tags=["recommend"])
    def by_items(req: ByItemsRequest) -> JSONResponse:
        """Top-k for an anonymous session (no user id): its items folded in as a new user, not stored.
        Unknown items: 404 naming them."""
        from ..foldin_run import FoldInError, recommend_sessions, session_rows

        snap = holder.snapshot
        try:
            r = session_rows(snap.run, [req.items])
        except FoldInError as exc:
            raise HTTPException(STATUS[exc.kind], detail=str(exc)) from None
        k = min(req.k, snap.run.n_items)
        scores, items = recommend_sessions(snap.recommender, foldin_of(snap), r, k, req.exclude_seen)
        return JSONResponse({"items": snap._items(scores[0], items[0])})

    def add(side: str, req: AddNodesRequest) -> dict[str, Any]:
        from ..foldin_run import FoldInError, fold_in_side, save_grown
        from ..io import DirLock

        if api_key is None:
            raise HTTPException(
                403,
                detail=f"adding {side}s is disabled: start the server with an API key "
                "(--api-key or HQGNN_API_KEY) to enable it",
            )
        total = sum(len(n.interactions) for n in req.nodes)
        if total > MAX_NEW_INTERACTIONS:
            raise HTTPException(
                413, detail=f"{total} interactions in one request, over the limit of {MAX_NEW_INTERACTIONS}"
            )
        ids = [n.id for n in req.nodes]
        if len({str(i) for i in ids}) != len(ids):
            raise HTTPException(422, detail=f"a {side} id is given twice in this request")
        nodes = np.repeat(np.asarray(ids, dtype=object), [len(n.interactions) for n in req.nodes])
        others = [o for n in req.nodes for o in n.interactions]
        with grow_lock:
            snap = holder.snapshot
            try:
                grown = fold_in_side(snap.run, side, nodes.tolist(), others, foldin=foldin_of(snap))
            except FoldInError as exc:
                raise HTTPException(STATUS[exc.kind], detail=str(exc)) from None
            # persisted before it is served: the run directory is replaced whole (staging + rename), so
            # a crash leaves the old run or the grown one, and a restart serves what was acknowledged
            with DirLock(snap.run_dir):
                save_grown(grown, snap.run_dir)
            new = holder.reload(snap.run_dir)
        log.info(
            "added %d %ss to %s (%d users, %d items)", len(ids), side, new.run_dir, new.run.n_users, new.run.n_items
        )
        return {"added": ids, "users": new.run.n_users, "items": new.run.n_items}

    @app.post("/users", tags=["admin"])
    def add_users(req: AddNodesRequest) -> dict[str, Any]:
        """Fold new users in from their items, persist the grown run in the served run directory
        (atomically) and serve it; needs the API key (403 on a server without one). Unknown items: 404;
        an id the run has: 409."""
        return add("user", req)

    @app.post("/items", tags=["admin"])
    def add_items(req: AddNodesRequest) -> dict[str, Any]:
        """Fold new items in from their users (as ``POST /users``, sides swapped)."""
        return add("item", req)
