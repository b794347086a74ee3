"""HTTP service: every route and error through TestClient, then a real uvicorn process (load and hot reload under load)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from hqgnn.cli import main
from hqgnn.config import RunConfig
from hqgnn.errors import HqgnnError
from hqgnn.recommender import Recommender
from hqgnn.run import load_run
from hqgnn.serve import create_app
from hqgnn.serve.schemas import BatchResponse, Metadata, SimilarItems, UserRecommendations
from hqgnn.train.pipeline import run_training

with warnings.catch_warnings():
    # starlette warns at import that its TestClient will move to httpx2; the client works as is
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = "s3cret-key"
SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------- runs (trained once per session)


def _train(out: Path, bits: int = 0) -> Path:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim = 16
    cfg.train.epochs = 2
    cfg.train.device = "cpu"
    if bits:
        cfg.quant.bits, cfg.quant.estimator = bits, "ste"
    run_training(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def float_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("serve") / "float")


@pytest.fixture(scope="session")
def quant_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("serve") / "q1", bits=1)


@pytest.fixture(scope="session")
def str_run(float_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The float run with string ids ("u0".., "i0"..), to check ids come back as JSON strings."""
    from hqgnn.run import load_model_state, save_run

    out = tmp_path_factory.mktemp("serve") / "strids"
    run = load_run(float_run)
    # written as a run of its own (a copy with ids.npz replaced would fail its manifest, as it should)
    save_run(out, run.config, run.metrics, load_model_state(float_run, run.manifest), run.tables,
             np.array([f"u{u}" for u in run.user_ids]), np.array([f"i{i}" for i in run.item_ids]), run.seen)
    return out


@pytest.fixture(scope="module")
def client(float_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(float_run)) as c:
        yield c


@pytest.fixture(scope="module")
def keyed(float_run: Path) -> TestClient:
    """A keyed app, fresh per module; tests that reload it point it back at float_run afterwards."""
    return TestClient(create_app(float_run, api_key=KEY))


def _cli_recommend(run: Path, user: str, k: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    main(["recommend", str(run), "--user", user, "-k", str(k), "--json"])
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- routes


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_answers_match_the_documented_schemas(client: TestClient) -> None:
    # scoring routes return plain JSON (no response_model pass at runtime): pin it to the schemas here
    UserRecommendations.model_validate(client.get("/recommend", params={"user": 3}).json(), strict=True)
    BatchResponse.model_validate(client.post("/recommend/batch", json={"users": [3, 4]}).json(), strict=True)
    SimilarItems.model_validate(client.get("/similar-items", params={"item": 5}).json(), strict=True)
    Metadata.model_validate(client.get("/metadata").json())
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/metadata", "/recommend", "/recommend/batch", "/similar-items",
                                  "/admin/reload", "/recommend/by-items", "/users", "/items"}
    ok = spec["paths"]["/recommend/batch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/BatchResponse"}


@pytest.mark.parametrize("which", ["float", "quant"])
def test_metadata(which: str, float_run: Path, quant_run: Path) -> None:
    run_dir = float_run if which == "float" else quant_run
    meta = TestClient(create_app(run_dir)).get("/metadata").json()
    run = load_run(run_dir)
    assert meta["quantized"] is (which == "quant")
    assert meta["bits"] == (1 if which == "quant" else 0)
    assert meta["model"] == ("hqgnn-1bit" if which == "quant" else "lightgcn-float32")
    assert (meta["dim"], meta["users"], meta["items"]) == (16, run.n_users, run.n_items)
    assert meta["memory"] == run.metrics["memory"]
    assert meta["run_dir"] == str(run_dir.resolve())
    assert meta["loaded_at"].endswith("+00:00")
    if which == "quant":
        assert meta["memory"]["ratio_to_float32"] < 0.1


@pytest.mark.parametrize("which", ["float", "quant"])
@pytest.mark.parametrize("user", ["3", "17"])
def test_recommend_equals_cli(which: str, user: str, float_run: Path, quant_run: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = float_run if which == "float" else quant_run
    want = _cli_recommend(run_dir, user, 5, capsys)
    got = TestClient(create_app(run_dir)).get("/recommend", params={"user": user, "k": 5}).json()
    assert got == want  # same ids (JSON ints), same order, same float scores
    assert got["user"] == int(user) and len(got["items"]) == 5


def test_asymmetric_run_is_served_renumbered_with_the_same_answers(tmp_path: Path) -> None:
    """An asymmetric code run (4-bit centered queries: per-item scales and terms) is served in the
    index's storage order; the answers in raw ids equal the run's own numbering (untied slots)."""
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim, cfg.train.epochs, cfg.train.device = 16, 2, "cpu"
    cfg.quant.bits, cfg.quant.estimator, cfg.quant.user_bits, cfg.quant.center = 1, "ste", 4, True
    run_training(cfg, tmp_path / "asym", progress=False)
    run = load_run(tmp_path / "asym")
    assert not run.format.symmetric and "item_term" in run.tables
    app = TestClient(create_app(tmp_path / "asym"))
    snap = app.app.state.holder.snapshot
    assert snap.recommender.ranker.index.format.item_order == "none"
    assert not np.array_equal(snap.run.item_ids, run.item_ids)  # renumbered: the id table moved
    scores, items = Recommender(run).recommend(np.arange(run.n_users), 10)
    for u in (0, 7, 150):
        got = app.get("/recommend", params={"user": int(run.user_ids[u]), "k": 10}).json()["items"]
        assert [g["score"] for g in got] == scores[u].astype(np.float64).tolist()
        untied = [i for i in range(10) if scores[u][i] not in np.delete(scores[u], i)]
        assert [got[i]["item"] for i in untied] == [int(run.item_ids[items[u][i]]) for i in untied]


def test_exclude_seen_flag(client: TestClient, float_run: Path) -> None:
    run = load_run(float_run)
    rec = Recommender(run)
    seen = {run.item_ids[i].item() for i in run.seen[3].indices}
    assert seen
    excl = client.get("/recommend", params={"user": 3, "k": 50}).json()["items"]
    assert not seen & {r["item"] for r in excl}
    incl = client.get("/recommend", params={"user": 3, "k": 50, "exclude_seen": "false"}).json()["items"]
    scores, items = rec.recommend(np.array([3]), 50, exclude_seen=False)
    assert [r["item"] for r in incl] == [run.item_ids[i].item() for i in items[0]]
    assert [r["score"] for r in incl] == pytest.approx(scores[0].tolist())


def test_batch_equals_single_requests(client: TestClient) -> None:
    users = [3, "5", 0, 3, 299, 42]  # int or str ids, duplicates allowed, order kept
    r = client.post("/recommend/batch", json={"users": users, "k": 7, "exclude_seen": True})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [res["user"] for res in results] == [int(u) for u in users]
    for u, res in zip(users, results):
        single = client.get("/recommend", params={"user": u, "k": 7}).json()
        assert [r["item"] for r in res["items"]] == [r["item"] for r in single["items"]]
        # a (B, d) x (d, n) product may round differently from a (1, d) one (GEMM vs GEMV kernels)
        assert [r["score"] for r in res["items"]] == pytest.approx([r["score"] for r in single["items"]], rel=1e-5)


def test_batch_is_one_vectorized_call(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = client.app.state.holder.snapshot.recommender
    calls: list[int] = []
    real = rec.recommend

    def spy(users: np.ndarray, k: int, exclude_seen: bool = True) -> Any:
        calls.append(len(users))
        return real(users, k, exclude_seen)

    monkeypatch.setattr(rec, "recommend", spy)
    r = client.post("/recommend/batch", json={"users": list(range(200)), "k": 10})
    assert r.status_code == 200 and len(r.json()["results"]) == 200
    assert calls == [200]


def test_batch_default_k_and_max_size(client: TestClient) -> None:
    r = client.post("/recommend/batch", json={"users": [1] * 1000})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 1000 and all(len(res["items"]) == 10 for res in results)


def test_similar_items(client: TestClient, quant_run: Path, float_run: Path) -> None:
    for run_dir, c in ((float_run, client), (quant_run, TestClient(create_app(quant_run)))):
        run = load_run(run_dir)
        got = c.get("/similar-items", params={"item": 5, "k": 6}).json()
        scores, items = Recommender(run).similar_items(np.array([run.item_index(5)]), 6)
        assert got["item"] == 5
        assert [r["item"] for r in got["items"]] == [run.item_ids[i].item() for i in items[0]]
        assert [r["score"] for r in got["items"]] == pytest.approx(scores[0].tolist())
        assert 5 not in [r["item"] for r in got["items"]]


def test_padding_slots_are_omitted(client: TestClient, float_run: Path) -> None:
    run = load_run(float_run)
    n_seen = len(run.seen[3].indices)
    items = client.get("/recommend", params={"user": 3, "k": 1000}).json()["items"]
    assert len(items) == run.n_items - n_seen  # fewer than k: every unseen item, no -1 slots
    assert all(r["item"] in set(run.item_ids.tolist()) for r in items)
    sim = client.get("/similar-items", params={"item": 5, "k": 1000}).json()["items"]
    assert len(sim) == run.n_items - 1


def test_string_ids(str_run: Path, float_run: Path) -> None:
    c = TestClient(create_app(str_run))
    got = c.get("/recommend", params={"user": "u3", "k": 4}).json()
    UserRecommendations.model_validate(got, strict=True)
    ref = TestClient(create_app(float_run)).get("/recommend", params={"user": 3, "k": 4}).json()
    assert got["user"] == "u3"
    assert [r["item"] for r in got["items"]] == [f"i{r['item']}" for r in ref["items"]]
    assert [r["score"] for r in got["items"]] == [r["score"] for r in ref["items"]]
    batch = c.post("/recommend/batch", json={"users": ["u3", "u4"], "k": 4}).json()["results"]
    assert batch[0] == got and batch[1]["user"] == "u4"
    assert c.get("/similar-items", params={"item": "i5", "k": 2}).json()["item"] == "i5"
    assert c.get("/recommend", params={"user": "3"}).status_code == 404


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "method, path, kwargs, detail",
    [
        ("get", "/recommend", {"params": {"user": "nobody"}}, "unknown user 'nobody'"),
        ("get", "/recommend", {"params": {"user": "300"}}, "unknown user '300'"),
        ("get", "/similar-items", {"params": {"item": "x"}}, "unknown item 'x'"),
    ],
)
def test_unknown_ids_are_404(client: TestClient, method: str, path: str, kwargs: dict, detail: str) -> None:
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 404
    assert r.json() == {"detail": detail}


def test_huge_unknown_id_is_not_echoed_whole(client: TestClient) -> None:
    r = client.get("/recommend", params={"user": "x" * 5000})
    assert r.status_code == 404 and len(r.json()["detail"]) < 120
    r = client.post("/recommend/batch", json={"users": ["x" * 5000]})
    assert r.status_code == 200 and len(r.json()["results"][0]["error"]) < 120


@pytest.mark.parametrize(
    "users",
    [
        [1, 2, 999999, "ghost"],
        [1, "ghost"],
        ["ghost"],
        # big enough to be scored in a compute thread: the marking must come back the same way
        [*range(300), *range(300), "ghost"],
    ],
)
def test_batch_answers_known_users_and_marks_unknown_ones(client: TestClient, users: list) -> None:
    r = client.post("/recommend/batch", json={"users": users, "k": 5})
    assert r.status_code == 200
    body = BatchResponse.model_validate(r.json(), strict=True).model_dump()
    known = [u for u in users if isinstance(u, int) and u < 300]
    assert body["unknown_users"] == [u for u in users if u not in known]
    assert [e["user"] for e in body["results"]] == users  # request order, one entry each
    for u, entry in zip(users, body["results"]):
        if u in known:
            single = client.get("/recommend", params={"user": u, "k": 5}).json()
            assert entry["error"] is None
            assert [x["item"] for x in entry["items"]] == [x["item"] for x in single["items"]]
            # batched and single scoring sum in another order: float32 rounding only
            assert [x["score"] for x in entry["items"]] == pytest.approx([x["score"] for x in single["items"]], rel=1e-5)
        else:
            assert entry["items"] == [] and entry["error"] == (
                f"unknown user {u!r}" if isinstance(u, str) else f"unknown user {u}")


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("get", "/recommend", {"params": {"user": 3, "k": 0}}),
        ("get", "/recommend", {"params": {"user": 3, "k": 1001}}),
        ("get", "/recommend", {"params": {"user": 3, "k": "abc"}}),
        ("get", "/recommend", {"params": {"user": 3, "k": 2.5}}),
        ("get", "/recommend", {"params": {"user": 3, "exclude_seen": "maybe"}}),
        ("get", "/recommend", {"params": {"k": 5}}),
        ("get", "/similar-items", {"params": {"item": 5, "k": 0}}),
        ("get", "/similar-items", {"params": {"item": 5, "k": 1001}}),
        ("get", "/similar-items", {"params": {"item": 5, "k": "abc"}}),
        ("post", "/recommend/batch", {"json": {"users": list(range(1001))}}),
        ("post", "/recommend/batch", {"json": {"users": []}}),
        ("post", "/recommend/batch", {"json": {"users": [1], "k": 0}}),
        ("post", "/recommend/batch", {"json": {"users": [1], "k": 1001}}),
        ("post", "/recommend/batch", {"json": {"users": [1], "k": "abc"}}),
        ("post", "/recommend/batch", {"json": {"users": [True]}}),
        ("post", "/recommend/batch", {"json": {"users": [1.5]}}),
        ("post", "/recommend/batch", {"json": {"users": [[1]]}}),
        ("post", "/recommend/batch", {"json": {"users": "3"}}),
        ("post", "/recommend/batch", {"json": {}}),
        ("post", "/recommend/batch", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ],
)
def test_bad_input_is_422(client: TestClient, method: str, path: str, kwargs: dict) -> None:
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 422, r.text
    assert "detail" in r.json() and "Traceback" not in r.text


def test_unexpected_error_is_500_without_internals(float_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(float_run)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail at /srv/internal/path.py")

    monkeypatch.setattr(app.state.holder.snapshot.recommender, "recommend", boom)
    r = TestClient(app, raise_server_exceptions=False).get("/recommend", params={"user": 3})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}
    assert "secret" not in r.text and "Traceback" not in r.text


def test_bad_run_dir_and_empty_key_fail_at_startup(tmp_path: Path, float_run: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HqgnnError, match="missing"):
        create_app(tmp_path)
    with pytest.raises(HqgnnError, match="empty"):
        create_app(float_run, api_key="")
    with pytest.raises(SystemExit) as exc:  # `hqgnn serve` turns it into one error line
        main(["serve", str(tmp_path / "nope")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err


# ---------------------------------------------------------------- API key and reload

PROTECTED = [
    ("get", "/metadata", {}),
    ("get", "/recommend", {"params": {"user": 3}}),
    ("post", "/recommend/batch", {"json": {"users": [3]}}),
    ("get", "/similar-items", {"params": {"item": 5}}),
    ("post", "/admin/reload", {"json": {"run_dir": "/nowhere"}}),
    ("get", "/docs", {}),
    ("get", "/openapi.json", {}),
    ("get", "/no-such-route", {}),
]


@pytest.mark.parametrize("method, path, kwargs", PROTECTED)
def test_api_key_required(keyed: TestClient, method: str, path: str, kwargs: dict) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}):
        r = getattr(keyed, method)(path, headers=headers, **kwargs)
        assert r.status_code == 401, (path, headers)
        assert "API key" in r.json()["detail"]


def test_api_key_accepted_and_health_open(keyed: TestClient) -> None:
    assert keyed.get("/health").json() == {"status": "ok"}  # no key needed
    h = {"X-API-Key": KEY}
    assert keyed.get("/recommend", params={"user": 3, "k": 3}, headers=h).status_code == 200
    assert keyed.post("/recommend/batch", json={"users": [3]}, headers=h).status_code == 200
    assert keyed.get("/similar-items", params={"item": 5}, headers=h).status_code == 200
    assert keyed.get("/metadata", headers=h).status_code == 200
    assert keyed.get("/recommend", params={"user": 3, "k": 0}, headers=h).status_code == 422  # after auth


def test_reload_refused_without_configured_key(client: TestClient, quant_run: Path) -> None:
    before = client.get("/metadata").json()
    r = client.post("/admin/reload", json={"run_dir": str(quant_run)})
    assert r.status_code == 403 and "API key" in r.json()["detail"]
    r = client.post("/admin/reload", json={"run_dir": str(quant_run)}, headers={"X-API-Key": "anything"})
    assert r.status_code == 403
    assert client.get("/metadata").json() == before


def test_reload_bad_dir_is_400_and_keeps_model(keyed: TestClient, tmp_path: Path, float_run: Path) -> None:
    h = {"X-API-Key": KEY}
    before = keyed.get("/metadata", headers=h).json()
    rec_before = keyed.get("/recommend", params={"user": 3}, headers=h).json()
    r = keyed.post("/admin/reload", json={"run_dir": str(tmp_path / "nope")}, headers=h)
    assert r.status_code == 400
    assert "cannot load run" in r.json()["detail"] and "missing" in r.json()["detail"]
    # a directory that has every file but a corrupt table also fails cleanly
    broken = tmp_path / "broken"
    shutil.copytree(float_run, broken)
    (broken / "tables.safetensors").write_bytes(b"garbage")
    r = keyed.post("/admin/reload", json={"run_dir": str(broken)}, headers=h)
    assert r.status_code == 400 and "cannot load run" in r.json()["detail"]
    assert keyed.post("/admin/reload", json={}, headers=h).status_code == 422
    assert keyed.get("/metadata", headers=h).json() == before
    assert keyed.get("/recommend", params={"user": 3}, headers=h).json() == rec_before


def test_reload_swaps_model(keyed: TestClient, float_run: Path, quant_run: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    h = {"X-API-Key": KEY}
    old = keyed.app.state.holder.snapshot
    r = keyed.post("/admin/reload", json={"run_dir": str(quant_run)}, headers=h)
    try:
        assert r.status_code == 200, r.text
        assert r.json()["bits"] == 1 and r.json()["run_dir"] == str(quant_run.resolve())
        assert keyed.get("/metadata", headers=h).json()["bits"] == 1
        got = keyed.get("/recommend", params={"user": 3, "k": 5}, headers=h).json()
        assert got == _cli_recommend(quant_run, "3", 5, capsys)
        # the old snapshot object is untouched: a request that had taken it still answers from it
        assert old.run_dir == float_run.resolve() and not old.run.quantized
        assert old.recommend([3], 5, True) == [_cli_recommend(float_run, "3", 5, capsys)]
    finally:
        keyed.post("/admin/reload", json={"run_dir": str(float_run)}, headers=h)
    assert keyed.get("/metadata", headers=h).json()["bits"] == 0


# ---------------------------------------------------------------- a real uvicorn process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m hqgnn serve RUN`` in a subprocess on a free loopback port (logs to a file, never a pipe)."""

    def __init__(self, run_dir: Path, log_path: Path, api_key: str | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), *sys.path]), PYTHONUNBUFFERED="1")
        env.pop("HQGNN_API_KEY", None)
        if api_key is not None:
            env["HQGNN_API_KEY"] = api_key
        self._log = open(log_path, "wb")
        # a pipe nobody reads would fill up with access-log lines and stall the server: log to a file
        self.proc = subprocess.Popen([sys.executable, "-m", "hqgnn", "serve", str(run_dir), "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not healthy after {timeout}s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def server(float_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Serves float_run for the read-only tests; the reload test gets its own (reload_server)."""
    srv = Server(float_run, tmp_path_factory.mktemp("uvicorn") / "server.log", api_key=KEY)
    yield srv
    srv.stop()


@pytest.fixture
def reload_server(float_run: Path, tmp_path: Path) -> Iterator[Server]:
    srv = Server(float_run, tmp_path / "server.log", api_key=KEY)
    yield srv
    srv.stop()


def _http(srv: Server, **kw: Any) -> httpx.Client:
    # trust_env=False: a proxy configured in the environment must never see loopback test traffic
    return httpx.Client(base_url=srv.url, headers={"X-API-Key": KEY}, trust_env=False, timeout=30.0, **kw)


def test_uvicorn_serves_like_the_cli(server: Server, float_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _http(server) as c:
        assert c.get("/recommend", params={"user": 3, "k": 5}).json() == _cli_recommend(float_run, "3", 5, capsys)
        assert c.get("/metadata").json()["run_dir"] == str(float_run.resolve())
        assert c.get("/recommend", params={"user": "ghost"}).status_code == 404
        assert c.get("/recommend", params={"user": 3, "k": 0}).status_code == 422
    r = httpx.get(server.url + "/metadata", trust_env=False)
    assert r.status_code == 401
    assert httpx.get(server.url + "/health", trust_env=False).status_code == 200


def _load(srv: Server, n: int, concurrency: int, n_users: int) -> Counter[str]:
    """n mixed requests (single, batch, similar, metadata) from `concurrency` threads; outcome counts.

    Threads with one keep-alive httpx.Client each: on a 2-core machine that drives the server
    about 3x faster than httpx.AsyncClient, whose per-request overhead would dominate the test.
    """
    outcomes: Counter[str] = Counter()
    users = np.random.default_rng(0).integers(0, n_users, size=n).tolist()
    todo = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        with _http(srv) as c:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                u = users[i]
                try:
                    if i % 10 == 0:
                        r = c.post("/recommend/batch", json={"users": [u, (u + 1) % n_users], "k": 10})
                        ok = r.status_code == 200 and len(r.json()["results"]) == 2
                    elif i % 10 == 1:
                        r = c.get("/similar-items", params={"item": 5, "k": 10})
                        ok = r.status_code == 200 and len(r.json()["items"]) == 10
                    elif i % 50 == 2:
                        r = c.get("/metadata")
                        ok = r.status_code == 200
                    else:
                        r = c.get("/recommend", params={"user": u, "k": 10})
                        ok = r.status_code == 200 and r.json()["user"] == u and len(r.json()["items"]) == 10
                    key = "ok" if ok else f"bad {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    outcomes[key] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcomes


def test_load_2000_requests_32_concurrent(server: Server) -> None:
    outcomes = _load(server, 2000, 32, n_users=300)
    assert outcomes == Counter({"ok": 2000}), (outcomes, server.log())


def test_reload_under_load(reload_server: Server, float_run: Path, quant_run: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    counts: list[Counter[str]] = [Counter() for _ in range(8)]
    bits_seen: set[int] = set()

    def hammer(slot: int) -> None:
        with _http(reload_server) as c:
            i = slot
            while not stop.is_set():
                i += 1
                try:
                    if i % 7 == 0:
                        r = c.get("/metadata")
                        if r.status_code == 200:
                            bits_seen.add(r.json()["bits"])
                    elif i % 11 == 0:  # big enough to be scored in a compute thread, not inline
                        r = c.post("/recommend/batch", json={"users": [u % 300 for u in range(400)], "k": 5})
                    elif i % 5 == 0:
                        r = c.post("/recommend/batch", json={"users": [i % 300, 3], "k": 5})
                    else:
                        r = c.get("/recommend", params={"user": i % 300, "k": 10})
                    counts[slot]["ok" if r.status_code == 200 else f"bad {r.status_code}: {r.text[:200]}"] += 1
                except httpx.HTTPError as exc:
                    counts[slot][f"{type(exc).__name__}: {exc}"] += 1

    threads = [threading.Thread(target=hammer, args=(s,), daemon=True) for s in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        with _http(reload_server) as admin:
            r = admin.post("/admin/reload", json={"run_dir": str(quant_run)})
            assert r.status_code == 200, r.text
            bad = admin.post("/admin/reload", json={"run_dir": str(quant_run / "missing")})
            assert bad.status_code == 400
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    total = sum(counts, Counter())
    assert set(total) == {"ok"}, (total, reload_server.log())
    assert total["ok"] > 50
    with _http(reload_server) as c:
        meta = c.get("/metadata").json()
        assert meta["run_dir"] == str(quant_run.resolve()) and meta["bits"] == 1
        assert c.get("/recommend", params={"user": 3, "k": 5}).json() == _cli_recommend(quant_run, "3", 5, capsys)
    assert bits_seen == {0, 1}  # requests were answered by both runs, i.e. during the swap
    assert f"reloaded {quant_run.resolve()}" in reload_server.log(tail=10**8)
