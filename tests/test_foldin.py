"""Fold-in of new users and items (hqgnn.foldin, hqgnn.foldin_run, HQGNN.fold_in_*, hqgnn fold-in)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hqgnn import HQGNN
from hqgnn.config import RunConfig
from hqgnn.errors import HqgnnError
from hqgnn.foldin import FoldIn, encode_rows
from hqgnn.foldin_run import FoldInError, fold_in_side, recommend_sessions, session_rows
from hqgnn.index.reference import reference_asym_search, reference_search
from hqgnn.recommender import Recommender
from hqgnn.run import TrainedRun, load_run
from hqgnn.train.pipeline import run_training
from run_helpers import run_cli

FORMATS = {
    "float": {},
    "b1": {"quant.bits": 1},
    "b2_center_fp16": {"quant.bits": 2, "quant.center": True, "quant.scale_dtype": "float16"},
    "b1_floatq_tensor": {"quant.bits": 1, "quant.user_bits": 0, "quant.scale": "tensor", "quant.center": True},
}


def _train(out: Path, **fields: object) -> Path:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim, cfg.train.epochs, cfg.train.device = 16, 3, "cpu"
    if fields:
        cfg.quant.estimator = "ste"
    for key, value in fields.items():
        cfg.set(key, value)
    run_training(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module", params=list(FORMATS))
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("foldin") / request.param, **FORMATS[request.param])


@pytest.fixture(scope="module")
def b1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("foldin") / "b1cli", **FORMATS["b1"])


def test_encoding_the_runs_own_rows_reproduces_its_stored_tables(run_dir: Path) -> None:
    run = load_run(run_dir)
    for side in ("user", "item"):
        rows = encode_rows(run, side, run.tables[f"{side}_emb"].numpy())
        assert rows, side
        for key, value in rows.items():
            assert torch.equal(value.to(run.tables[key].dtype), run.tables[key]), key


def test_features_equal_the_obvious_loop(run_dir: Path) -> None:
    run = load_run(run_dir)
    fi = FoldIn(run, "propagate")
    r = sp.random(5, run.n_items, density=0.05, format="lil", random_state=1)
    r[:, 3] = 1.0  # no empty row
    r = (r.tocsr() > 0).astype(np.float32)
    item_deg = np.maximum(run.seen.getnnz(axis=0), 1)
    items = run.tables["item_emb"].numpy().astype(np.float64)
    got = fi.vectors("user", r)
    for b in range(r.shape[0]):
        cols = r[b].indices
        want = sum(items[j] / np.sqrt(len(cols) * item_deg[j]) for j in cols)
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-6)


def test_lstsq_recovers_trained_rows_that_are_linear_in_their_features(run_dir: Path) -> None:
    """With user rows exactly F0 A, folding a trained user back in from its own items returns its row."""
    run = load_run(run_dir)
    f0 = FoldIn(run, "propagate").vectors("user", run.seen[: run.n_users])
    a = np.random.default_rng(3).normal(size=(f0.shape[1], f0.shape[1])).astype(np.float32)
    tables = {**run.tables, "user_emb": torch.from_numpy(f0 @ a)}
    fake = TrainedRun(run.path, run.config, run.metrics, tables, run.user_ids, run.item_ids, run.seen)
    fi = FoldIn(fake, "lstsq", ridge=0.0)
    np.testing.assert_allclose(fi.vectors("user", run.seen[[4, 9]]), f0[[4, 9]] @ a, rtol=1e-3, atol=1e-4)
    # and on the real run the fit is at least as close as the best scaled propagation (ridge 0: optimal M)
    x0 = run.tables["user_emb"].numpy()
    fit = FoldIn(run, "lstsq", ridge=0.0).vectors("user", run.seen)
    c = float((f0 * x0).sum() / (f0 * f0).sum())
    assert np.linalg.norm(fit - x0) <= np.linalg.norm(c * f0 - x0) + 1e-5


@pytest.mark.parametrize("method", ["propagate", "lstsq", "grad"])
def test_folded_in_user_is_ranked_exactly_by_the_runs_format(run_dir: Path, method: str) -> None:
    run = load_run(run_dir)
    items = run.item_ids[[1, 5, 8, 13]]
    grown = fold_in_side(run, "user", ["new"] * 4 if run.user_ids.dtype.kind == "U" else [10**9] * 4, items, method)
    assert grown.n_users == run.n_users + 1 and grown.n_items == run.n_items
    for key, table in run.tables.items():  # the old rows are untouched
        if key.startswith("user_") and table.ndim:
            assert torch.equal(grown.tables[key][: run.n_users], table)
    rec = Recommender(grown)
    u = grown.n_users - 1
    scores, ids = rec.recommend(np.array([u]), 20)
    fmt = grown.format
    seen = grown.seen[[u]]
    t = {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in grown.tables.items()}
    if fmt is None:  # float: a plain dot product
        key = t["user_emb"][u] @ t["item_emb"].T
        key[seen.indices] = -np.inf
        want = np.lexsort((np.arange(len(key)), -key))[:20]
        np.testing.assert_array_equal(ids[0], want)
    elif fmt.symmetric:
        _, want = reference_search(t["user_codes"][[u]], t["item_codes"], 20, t["user_scale"][[u]], t["item_scale"],
                                   exclude=(seen.indptr, seen.indices))
        np.testing.assert_array_equal(ids, want)
    else:
        q = t["user_query"][[u]] if fmt.float_queries else t["user_codes"][[u]]
        qs = None if fmt.float_queries else t["user_scale"][[u]]
        _, want = reference_asym_search(q, t["item_codes"], 20, t["item_scale"], t.get("item_term"), qs,
                                        exclude=(seen.indptr, seen.indices), float_queries=fmt.float_queries)
        np.testing.assert_array_equal(ids, want)
    # an anonymous session with the same items is ranked as the folded-in user
    old = Recommender(run)
    s_scores, s_ids = recommend_sessions(old, FoldIn(run, method), session_rows(run, [list(items)]), 20)
    np.testing.assert_array_equal(s_ids, ids)
    np.testing.assert_allclose(s_scores, scores, rtol=1e-6)


def test_folded_in_items_get_codes_and_old_users_keep_their_order(run_dir: Path) -> None:
    run = load_run(run_dir)
    kind = run.item_ids.dtype.kind
    new = ["a", "a", "b"] if kind == "U" else [10**9, 10**9, 10**9 + 1]
    grown = fold_in_side(run, "item", new, run.user_ids[[0, 1, 2]])
    assert grown.n_items == run.n_items + 2 and grown.seen[0, run.n_items] == 1 and grown.seen[2, run.n_items + 1] == 1
    before = Recommender(run).recommend(np.arange(10), 10)
    after = Recommender(grown).recommend(np.arange(10), 10)
    new_cols = after[1] >= run.n_items
    # an old user's list is the old list with the new items merged in by score
    for u in range(10):
        np.testing.assert_array_equal(after[1][u][~new_cols[u]], before[1][u][: (~new_cols[u]).sum()])


def test_chained_fold_in_after_reload_encodes_against_the_trained_stats(run_dir: Path, tmp_path: Path) -> None:
    """A second fold-in into a grown run that was saved and reloaded encodes exactly as a fold-in into the
    trained run: the means and layer weights stay the trained tables', not the grown tables'."""
    from hqgnn.foldin_run import save_grown

    run = load_run(run_dir)
    kind = run.user_ids.dtype.kind
    first, second = (["n1", "n2"], ["n3"]) if kind == "U" else ([10**9, 10**9 + 1], [10**9 + 2])
    grown = fold_in_side(run, "user", first, run.item_ids[[0, 1]])
    save_grown(grown, tmp_path / "grown")
    # the trained weights are the source's file, linked or copied, never re-serialized
    assert (tmp_path / "grown" / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    reloaded = load_run(tmp_path / "grown")
    items = run.item_ids[[2, 3, 4]]
    chained = fold_in_side(reloaded, "user", second * 3, items, foldin=FoldIn(run))
    direct = fold_in_side(run, "user", second * 3, items)
    for key, table in direct.tables.items():
        if key.startswith("user_") and table.ndim and table.shape[0] == direct.n_users:
            assert torch.equal(chained.tables[key][-1], table[-1]), key
    if run.quantized:  # the grown tables' means differ from the trained ones: the test can fail
        assert not torch.equal(reloaded.tables["user_emb"].mean(0), run.tables["user_emb"].mean(0))


def test_fold_in_refuses_bad_input(b1_dir: Path) -> None:
    run = load_run(b1_dir)
    with pytest.raises(FoldInError, match="already in the run") as e:
        fold_in_side(run, "user", [run.user_ids[0]], [run.item_ids[0]])
    assert e.value.kind == "duplicate"
    with pytest.raises(FoldInError, match="unknown items: 99999") as e:
        fold_in_side(run, "user", [10**9], [99999])
    assert e.value.kind == "unknown"
    with pytest.raises(FoldInError, match="no interactions"):
        fold_in_side(run, "user", [], [])
    with pytest.raises(FoldInError, match="at least one item"):
        session_rows(run, [[]])
    with pytest.raises(HqgnnError, match="unknown fold-in method"):
        FoldIn(run, "magic")


def test_estimator_fold_in_and_anonymous_sessions(b1_dir: Path, tmp_path: Path) -> None:
    est = HQGNN.load(b1_dir)
    items = est.item_ids[[2, 3, 4]].tolist()
    anon_ids, anon_scores = est.recommend(user_items=items, k=5)
    est.fold_in_users((np.array([777777] * 3), np.array(items)))
    ids, scores = est.recommend(777777, k=5)
    np.testing.assert_array_equal(ids, anon_ids)
    with pytest.raises(HqgnnError, match="already in the run"):
        est.fold_in_users((np.array([777777]), np.array(items[:1])))
    with pytest.raises(HqgnnError, match="unknown items"):
        est.recommend(user_items=[123456789], k=5)
    est.fold_in_items((est.user_ids[[0, 1]], np.array([555555, 555555])))
    saved = est.save(tmp_path / "grown")
    again = HQGNN.load(saved)
    np.testing.assert_array_equal(again.recommend(777777, k=5)[0], ids)
    assert 555555 in again.item_ids.tolist()
    assert again.metrics["fold_in"][0]["users"] == 1


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_fold_in_writes_a_new_run_and_leaves_the_old_one(b1_dir: Path, tmp_path: Path, capsys) -> None:
    before = _digest(b1_dir)
    data = tmp_path / "new.csv"
    data.write_text("user,item\n9001,3\n9001,5\n9002,7\n5,8000\n6,8000\n9002,8000\n1,2\n")
    out = tmp_path / "run2"
    code, stdout, stderr = run_cli(["fold-in", str(b1_dir), "--data", str(data), "--out", str(out), "--json"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["new_users"], summary["new_items"], summary["known_pairs_ignored"]) == (2, 1, 1)
    assert _digest(b1_dir) == before  # byte for byte
    assert run_cli(["check", str(out)], capsys)[0] == 0
    code, stdout, _ = run_cli(["recommend", str(out), "--user", "9002", "-k", "3", "--json"], capsys)
    assert code == 0 and len(json.loads(stdout)["items"]) == 3
    grown = load_run(out)
    assert grown.seen[grown.user_index(9002), grown.item_index(8000)] == 1  # the new user saw the new item


@pytest.mark.parametrize("content,message", [
    ("user,item\n9001,99999\n", "new items with no known user"),
    ("user,item\n", "no interactions"),
    ("user,item\n9001\n", ":2: missing item"),
    ("user,item\n1,2\n", "no new users or items"),
])
def test_cli_fold_in_bad_input_is_one_error_line(b1_dir: Path, tmp_path: Path, capsys, content: str,
                                                 message: str) -> None:
    data = tmp_path / "bad.csv"
    data.write_text(content)
    code, _, stderr = run_cli(["fold-in", str(b1_dir), "--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and message in stderr and "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # nothing written on a refusal


def test_cli_fold_in_refuses_an_existing_out(b1_dir: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "new.csv"
    data.write_text("user,item\n9001,3\n")
    code, _, stderr = run_cli(["fold-in", str(b1_dir), "--data", str(data), "--out", str(b1_dir)], capsys)
    assert code == 1 and "not an empty directory" in stderr
