"""The service cannot be knocked over: body limit (413 before parsing, counted while streaming), 422s that do not
echo the input, k clamped, reload errors without server paths, and a real uvicorn server under a mix of huge,
malformed and slow requests (no 5xx, /health fast, memory bounded)."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from reliability_helpers import abuse, start_server, tiny_config

from hqgnn.run import load_run
from hqgnn.serve import create_app
from hqgnn.train.pipeline import run_training

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = "abuse-key"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("abuse") / "q"
    run_training(tiny_config(bits=1), out, progress=False)
    return out


@pytest.fixture(scope="module")
def client(run_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(run_dir, api_key=KEY, max_body_bytes=10_000)) as c:
        c.headers["X-API-Key"] = KEY
        yield c


def test_body_over_the_limit_is_413_before_parsing(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from hqgnn.serve import state

    called = []
    monkeypatch.setattr(state.ModelSnapshot, "recommend_batch", lambda *a, **k: called.append(1))
    body = json.dumps({"users": [1] * 20_000})
    r = client.post("/recommend/batch", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "10000 bytes" in r.json()["detail"] and len(r.content) < 200

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b"[" * 4000

    r = client.post("/recommend/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and not called
    assert client.post("/recommend/batch", json={"users": [3]}).status_code == 200  # under the limit: served


def test_body_limit_is_checked_after_the_key(run_dir: Path) -> None:
    with TestClient(create_app(run_dir, api_key=KEY, max_body_bytes=100)) as c:
        assert c.post("/recommend/batch", content=b"x" * 1000).status_code == 401


def test_422_does_not_echo_the_input(client: TestClient) -> None:
    big = "y" * 9000
    r = client.post("/recommend/batch", json={"users": [big], "k": "many"})
    assert r.status_code == 422
    assert big[:100] not in r.text and len(r.content) < 2000
    detail = r.json()["detail"]
    assert all(set(e) == {"loc", "msg", "type"} for e in detail)
    r = client.get("/recommend", params={"user": 3, "k": "x" * 5000})
    assert r.status_code == 422 and "x" * 100 not in r.text


def test_k_is_bounded_by_the_catalog(client: TestClient, run_dir: Path) -> None:
    n_items = load_run(run_dir).n_items
    user = load_run(run_dir).user_ids[0].item()
    r = client.get("/recommend", params={"user": user, "k": 1000, "exclude_seen": False})
    assert r.status_code == 200 and len(r.json()["items"]) == n_items
    assert client.get("/recommend", params={"user": user, "k": 10**9}).status_code == 422  # documented MAX_K
    r = client.post("/recommend/batch", json={"users": [user], "k": 1000, "exclude_seen": False})
    assert len(r.json()["results"][0]["items"]) == n_items


def test_reload_error_names_the_file_not_the_server_path(client: TestClient, run_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "secret-place" / "run"
    shutil.copytree(run_dir, bad)
    (bad / "ids.npz").write_bytes(b"PK junk")
    before = client.get("/metadata").json()
    r = client.post("/admin/reload", json={"run_dir": str(bad)})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith("cannot load run: ids.npz:") and "secret-place" not in detail and "/" not in detail
    import os

    assert str(os.getpid()) not in detail
    assert client.get("/metadata").json() == before


def test_health_answers_while_a_slow_body_is_in_flight(run_dir: Path, tmp_path: Path) -> None:
    proc, url = start_server(run_dir, tmp_path / "log.txt")
    try:
        async def go() -> tuple[int, float]:
            async def slow() -> Iterator[bytes]:
                for part in (b'{"users": ', b"[3]", b"}"):
                    await asyncio.sleep(1.0)
                    yield part
            async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as c:
                task = asyncio.create_task(c.post("/recommend/batch", content=slow(),
                                                  headers={"Content-Type": "application/json"}))
                await asyncio.sleep(0.3)
                t = time.perf_counter()
                h = await c.get("/health")
                took = time.perf_counter() - t
                assert h.status_code == 200
                return (await task).status_code, took

        code, took = asyncio.run(go())
        assert code == 200 and took < 0.1
    finally:
        proc.terminate()
        proc.wait(30)


def test_abuse_mix_against_a_real_server(run_dir: Path, tmp_path: Path) -> None:
    """A smaller version of benchmarks/reliability.py's 5,000 x 32: no 5xx, nothing lost, /health fast."""
    run = load_run(run_dir)
    proc, url = start_server(run_dir, tmp_path / "log.txt")
    try:
        stats = abuse(url, proc.pid, n=400, concurrency=16, users=run.user_ids.tolist(),
                      items=run.item_ids.tolist(), seed=1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert stats["server_5xx"] == 0 and stats["lost"] == 0, stats
    assert stats["health_p99_ms"] < 100, stats
    assert stats["rss_max_mb"] < stats["rss_start_mb"] + 300, stats
    assert {"huge_body", "chunked_huge", "slow_body", "malformed_json"} <= set(stats["by_kind"])
