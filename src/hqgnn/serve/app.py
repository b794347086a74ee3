"""The FastAPI application (routes, API-key check, error bodies) and ``serve_run``, which runs it under uvicorn."""

from __future__ import annotations

import copy
import logging
import logging.config
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
import anyio
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import HqgnnError
from .schemas import (
    MAX_K,
    BatchRequest,
    BatchResponse,
    Metadata,
    ReloadRequest,
    SimilarItems,
    UserRecommendations,
)
from .state import ModelHolder, UnknownIdError, load_snapshot

log = logging.getLogger("hqgnn.serve")

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/health"})  # load balancers probe this without credentials
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")]
T = TypeVar("T")

# Where scoring runs. Measured on a 2-core box, 32 concurrent single-user requests: computing on the
# event loop gave ~3x the throughput of FastAPI's 40-thread pool, because a ~0.4 ms request is
# cheaper than the thread hop and 40 threads queueing for the GIL starve the loop. So work up to
# INLINE_MAX_SCORES (users x items) scores runs inline (about a millisecond on one core, the most the
# loop is ever blocked), and anything bigger (batches, large catalogs) runs in worker threads, at
# most one per core: torch releases the GIL in its kernels, so these run in parallel while the loop
# keeps answering (/health included). serve_run sets torch to one intra-op thread per call, so
# COMPUTE_THREADS concurrent calls use the cores without oversubscribing them.
INLINE_MAX_SCORES = 1 << 16
INLINE_MAX_ITEMS_OUT = 256  # a batch answering more (users x k) items is encoded in a compute thread too
COMPUTE_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_compute_limiter: RunVar[CapacityLimiter] = RunVar("hqgnn_compute_limiter")  # one per event loop


async def run_scoring(n_scores: int, fn: Callable[[], T]) -> T:
    """Call ``fn()`` inline if it scores at most INLINE_MAX_SCORES entries, else in a compute thread.

    ``fn`` also builds the JSON body: it grows with the same users x items, so a big answer is
    encoded off the event loop too.
    """
    if n_scores <= INLINE_MAX_SCORES:
        return fn()
    try:
        limiter = _compute_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(COMPUTE_THREADS)
        _compute_limiter.set(limiter)
    return await anyio.to_thread.run_sync(fn, limiter=limiter)


class ApiKeyMiddleware:
    """Rejects every request without the right ``X-API-Key`` header (401), except ``OPEN_PATHS``.

    A plain ASGI middleware rather than a route dependency, so it also covers /docs, /openapi.json
    and unknown paths, answers before any body parsing or validation, and costs one dict lookup.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(API_KEY_HEADER.lower().encode("latin-1"))
            # compare_digest: the time taken does not reveal how many leading bytes matched
            if given is None or not secrets.compare_digest(given, self._key):
                response = JSONResponse({"detail": f"missing or invalid API key (header {API_KEY_HEADER})"},
                                        status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full batch of 1000 long string ids is ~100 kB
DEFAULT_BODY_TIMEOUT_S = 30.0  # a body that trickles in slower than this is cut off (408)
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 before anything parses them.

    A declared ``Content-Length`` over the limit is answered at once, without reading the body;
    otherwise the body is read here, counting the bytes as they stream in (chunked uploads, a lying
    Content-Length), and refused as soon as the count passes the limit; a body that takes longer than
    ``timeout_s`` gets 408. Only a body within the limit reaches FastAPI (replayed from memory), so a
    30 MB JSON body is never decoded, validated or echoed. Reading is async: the event loop (and
    /health) keeps answering while slow bodies trickle in.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODYLESS_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await self._refuse(scope, receive, send, 400, "malformed Content-Length header")
                return
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, 413, f"request body over the limit of {self.max_bytes} bytes")
                return
        chunks: list[bytes] = []
        total = 0
        try:
            with anyio.fail_after(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client went away: nothing to answer
                    body = message.get("body", b"")
                    total += len(body)
                    if total > self.max_bytes:
                        await self._refuse(scope, receive, send, 413,
                                           f"request body over the limit of {self.max_bytes} bytes")
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await self._refuse(scope, receive, send, 408, f"request body not received within {self.timeout_s:g} s")
            return
        whole = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as the app expects

        await self.app(scope, replay, send)


def _public_errors(errors: Any) -> list[dict[str, Any]]:
    """A 422's error list without the offending input (it can be a megabyte long, or sensitive): where and what."""
    out = []
    for e in list(errors)[:20]:
        msg = str(e.get("msg", ""))
        out.append({"loc": [str(x)[:80] for x in e.get("loc", ())][:10], "msg": msg[:200], "type": e.get("type")})
    return out


def _reload_problem(exc: BaseException) -> str:
    """Why a reload failed, for the client: the run's file and problem, never a server path, pid or traceback."""
    from ..manifest import RunCheckError

    if isinstance(exc, RunCheckError):
        return exc.public
    if isinstance(exc, HqgnnError):  # drop the folders of any absolute path: "tables.safetensors: ...", not "/srv/..."
        return re.sub(r"(?:/[^/\s:'\"]+)+/", "", str(exc))[:300]
    return f"the run could not be loaded ({type(exc).__name__})"


def create_app(run_dir: str | Path, api_key: str | None = None, device: str = "cpu",
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> FastAPI:
    """Load ``run_dir`` once and return the app serving it; raises HqgnnError if it is not a finished run.

    Scoring runs inline or in a few compute threads depending on its size (see INLINE_MAX_SCORES).
    The Recommender is read-only after construction, so requests share it without locks; each
    request reads ``holder.snapshot`` once, so a concurrent reload never mixes two runs.
    """
    if api_key is not None and not api_key.strip():
        raise HqgnnError("the API key is empty: pass a non-empty key, or none to serve without one")
    holder = ModelHolder(load_snapshot(run_dir, device), device)

    app = FastAPI(
        title="hqgnn",
        version=__version__,
        description="Top-K recommendations and similar items from a trained hqgnn run."
        + (f" Every route except /health needs the `{API_KEY_HEADER}` header." if api_key else ""),
    )
    app.state.holder = holder
    # added first = inner: the key is checked (401) before any body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, timeout_s=body_timeout_s)
    if api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _public_errors(exc.errors())}, status_code=422)

    @app.exception_handler(UnknownIdError)
    async def unknown_id(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # No exception text in the body: it can carry paths and internals. Starlette re-raises the
        # exception after this response is sent, so uvicorn still logs the full traceback.
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness: answers from the event loop, never needs the key."""
        return {"status": "ok"}

    @app.get("/metadata", response_model=Metadata, tags=["service"])
    async def metadata() -> dict[str, Any]:
        """What is being served: model kind, bits, dim, sizes, memory, run directory, load time."""
        return holder.snapshot.metadata()

    # The scoring routes return a JSONResponse built from plain dicts: FastAPI then skips validating
    # and re-encoding the answer against response_model (kept for the OpenAPI schema), which cost
    # about 3x the scoring itself for a 256-user batch. The tests pin the shapes instead.

    @app.get("/recommend", response_model=UserRecommendations, tags=["recommend"])
    async def recommend(
        user: Annotated[str, Query(description="User id in the run's id space.")],
        k: K = 10,
        exclude_seen: Annotated[bool, Query(description="Leave out items the user interacted with.")] = True,
    ) -> JSONResponse:
        """Top-k items for one user (404 if the user is unknown)."""
        snap = holder.snapshot
        return await run_scoring(snap.run.n_items, lambda: JSONResponse(snap.recommend([user], k, exclude_seen)[0]))

    @app.post("/recommend/batch", response_model=BatchResponse, tags=["recommend"])
    async def recommend_batch(req: BatchRequest) -> JSONResponse:
        """Top-k for up to 1000 users in one vectorized scoring call.

        Unknown users do not fail the batch: their entry has no items and an ``error``, and they are
        listed in ``unknown_users``; the known users are answered as ``GET /recommend`` would.
        """
        snap = holder.snapshot
        n_scores = len(req.users) * snap.run.n_items
        if len(req.users) * req.k > INLINE_MAX_ITEMS_OUT:
            # building a big answer (users x k dicts) is ms of Python: in a compute thread, the loop (and
            # /health) keeps getting the GIL every switch interval instead of queueing behind it
            n_scores = max(n_scores, INLINE_MAX_SCORES + 1)
        return await run_scoring(
            n_scores, lambda: JSONResponse(snap.recommend_batch(req.users, req.k, req.exclude_seen)))

    @app.get("/similar-items", response_model=SimilarItems, tags=["recommend"])
    async def similar_items(
        item: Annotated[str, Query(description="Item id in the run's id space.")],
        k: K = 10,
    ) -> JSONResponse:
        """The k items with the largest inner product with ``item`` (itself excluded)."""
        snap = holder.snapshot
        return await run_scoring(snap.run.n_items, lambda: JSONResponse(snap.similar(item, k)))

    @app.post("/admin/reload", response_model=Metadata, tags=["admin"])
    def reload(req: Annotated[ReloadRequest, Body()]) -> dict[str, Any]:
        """Load another run directory and swap it in; requests in flight finish on the old model.

        A plain ``def``: FastAPI runs it in its thread pool, so loading never blocks the event loop.

        Refused (403) when the server has no API key, so an open server cannot be repointed.
        A directory that does not load gives 400 and the current model stays.
        """
        if api_key is None:
            raise HTTPException(403, detail="reload is disabled: start the server with an API key "
                                            "(--api-key or HQGNN_API_KEY) to enable it")
        try:
            new = holder.reload(req.run_dir)  # verified completely before the swap; on failure the old run stays
        except Exception as exc:  # a damaged run is one line naming its file; no server path, pid or traceback
            log.warning("reload of %s refused: %s", req.run_dir, exc)
            raise HTTPException(400, detail=f"cannot load run: {_reload_problem(exc)}") from None
        log.info("reloaded %s (%s, %d users, %d items)", new.run_dir, new.metadata()["model"], new.run.n_users,
                 new.run.n_items)
        return new.metadata()

    from .foldin_routes import register_foldin_routes

    register_foldin_routes(app, api_key)  # POST /recommend/by-items, /users, /items
    return app


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port that another process listens on (bound as uvicorn binds: SO_REUSEADDR, so a port
    in TIME_WAIT is free)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise HqgnnError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                             "(another server? choose another --port)") from None


def serve_run(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    *,
    device: str = "cpu",
    access_log: bool = True,
    torch_threads: int | None = 1,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve ``run_dir`` with uvicorn until interrupted (one process: the model lives in its memory).

    ``torch_threads`` sets torch's intra-op threads for this process (None: torch's default of one
    per core). One is the default because concurrency comes from requests running side by side
    (see INLINE_MAX_SCORES); intra-op threads on top would oversubscribe the cores.
    """
    import torch
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    _check_port_free(host, port)  # one error line now, not uvicorn's own error and exit 3 after the load
    # uvicorn's own log format, extended to this package's logger, so load / reload lines show up
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["hqgnn"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    logging.config.dictConfig(log_config)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    app = create_app(run_dir, api_key=api_key, device=device, max_body_bytes=max_body_bytes)
    meta = app.state.holder.snapshot.metadata()
    log.info("loaded %s (%s, %d users, %d items); API key %s", meta["run_dir"], meta["model"], meta["users"],
             meta["items"], "required" if api_key else "off")
    if api_key is None and host not in LOOPBACK:
        log.warning("serving on %s without an API key: anyone who can reach the port can query it", host)
    # One worker on purpose: /admin/reload swaps the model in this process only, so several
    # workers would serve different runs after a reload. Scale out with several servers instead.
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_config=log_config, timeout_graceful_shutdown=10)
