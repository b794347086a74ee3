"""HTTP fold-in routes: POST /recommend/by-items, POST /users, POST /items (keys, bounds, errors, persistence)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from hqgnn import HQGNN
from hqgnn.config import RunConfig
from hqgnn.run import check_run, load_run
from hqgnn.serve import create_app
from hqgnn.serve.foldin_routes import MAX_NEW_INTERACTIONS, MAX_NEW_NODES
from hqgnn.train.pipeline import run_training

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = "k3y"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim, cfg.train.epochs, cfg.train.device = 16, 2, "cpu"
    cfg.quant.bits, cfg.quant.estimator = 1, "ste"
    out = tmp_path_factory.mktemp("sf") / "run"
    run_training(cfg, out, progress=False)
    return out


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    """A private copy: POST /users rewrites the served run directory."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_by_items_equals_the_estimators_anonymous_session(trained: Path) -> None:
    run = load_run(trained)
    items = run.item_ids[[3, 4, 9]].tolist()
    with TestClient(create_app(trained)) as c:
        r = c.post("/recommend/by-items", json={"items": items, "k": 5})
        assert r.status_code == 200, r.text
        got = [e["item"] for e in r.json()["items"]]
        ids, _ = HQGNN.load(trained).recommend(user_items=items, k=5)
        assert got == ids[0].tolist() and not set(got) & set(items)
        r = c.post("/recommend/by-items", json={"items": [items[0], 987654], "k": 5})
        assert r.status_code == 404 and "987654" in r.json()["detail"]
        assert c.post("/recommend/by-items", json={"items": [], "k": 5}).status_code == 422
        assert c.post("/recommend/by-items", json={"items": [1] * 1001}).status_code == 422


def test_adding_users_needs_the_key_and_a_keyed_server(run_copy: Path) -> None:
    body = {"nodes": [{"id": 5001, "interactions": [1, 2]}]}
    with TestClient(create_app(run_copy)) as c:  # no key: mutation disabled
        assert c.post("/users", json=body).status_code == 403
    with TestClient(create_app(run_copy, api_key=KEY)) as c:
        assert c.post("/users", json=body).status_code == 401
        assert c.post("/users", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert 5001 not in load_run(run_copy).user_ids.tolist()


def test_added_users_and_items_are_served_and_persisted(run_copy: Path) -> None:
    h = {"X-API-Key": KEY}
    run = load_run(run_copy)
    item = int(run.item_ids[7])
    with TestClient(create_app(run_copy, api_key=KEY)) as c:
        r = c.post("/users", json={"nodes": [{"id": 5001, "interactions": [item, int(run.item_ids[8])]},
                                             {"id": 5002, "interactions": [item]}]}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["users"] == run.n_users + 2
        rec = c.get("/recommend", params={"user": 5001, "k": 3}, headers=h)
        assert rec.status_code == 200 and len(rec.json()["items"]) == 3
        r = c.post("/items", json={"nodes": [{"id": 7001, "interactions": [5001, int(run.user_ids[0])]}]}, headers=h)
        assert r.status_code == 200, r.text
        assert c.get("/similar-items", params={"item": 7001, "k": 2}, headers=h).status_code == 200
        # errors: duplicate id 409, unknown interaction 404 naming it, repeated id 422, bounds 422 / 413
        assert c.post("/users", json={"nodes": [{"id": 5001, "interactions": [item]}]}, headers=h).status_code == 409
        r = c.post("/users", json={"nodes": [{"id": 5003, "interactions": [424242]}]}, headers=h)
        assert r.status_code == 404 and "424242" in r.json()["detail"]
        r = c.post("/users", json={"nodes": [{"id": 5004, "interactions": [item]}] * 2}, headers=h)
        assert r.status_code == 422
        many = {"nodes": [{"id": 10**6 + i, "interactions": [item]} for i in range(MAX_NEW_NODES + 1)]}
        assert c.post("/users", json=many, headers=h).status_code == 422
        assert c.post("/users", json={"nodes": []}, headers=h).status_code == 422
    per = MAX_NEW_INTERACTIONS // MAX_NEW_NODES + 1
    big = {"nodes": [{"id": 10**6 + i, "interactions": [item] * per} for i in range(MAX_NEW_NODES)]}
    with TestClient(create_app(run_copy, api_key=KEY, max_body_bytes=100 << 20)) as c:
        assert c.post("/users", json=big, headers=h).status_code == 413
    with TestClient(create_app(run_copy, api_key=KEY, max_body_bytes=200)) as c:
        assert c.post("/users", json=big, headers=h).status_code == 413  # the body limit, before parsing
    # persisted: the directory verifies and a restarted server serves the added nodes
    assert check_run(run_copy)["users"] == run.n_users + 2
    with TestClient(create_app(run_copy)) as c:
        assert c.get("/recommend", params={"user": 5002, "k": 3}).status_code == 200
        assert c.get("/similar-items", params={"item": 7001, "k": 3}).status_code == 200
