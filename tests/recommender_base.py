"""Behavioural tests every model variant inherits (like implicit's recommender_base_test.py).

A variant is a subclass that sets ``params`` (keyword arguments of :class:`hqgnn.HQGNN`), e.g.
``class TestTwoBit(RecommenderBase): params = {"bits": 2}``. Data is tiny and string-keyed, training
a few epochs on the CPU, so the whole mixin runs in seconds per variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from hqgnn import HQGNN
from hqgnn.cli import main
from hqgnn.errors import HqgnnError
from hqgnn.config_docs import field_sections as _field_sections

FAST = {"dim": 8, "layers": 1, "epochs": 3, "batch_size": 256, "device": "cpu", "eval_every": 1}


def community_log(n_users: int = 90, n_items: int = 70, per_user: int = 14, seed: int = 0) -> pd.DataFrame:
    """String-keyed interactions with block structure (3 communities), so a model has something to learn."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        c = u % 3
        pool = np.arange(n_items)[np.arange(n_items) % 3 == c]
        own = rng.choice(pool, size=per_user - 2, replace=False)
        other = rng.choice(n_items, size=2, replace=False)
        for i in np.unique(np.r_[own, other]):
            users.append(f"user-{u}")
            items.append(f"item-{i}")
    return pd.DataFrame({"uid": users, "iid": items})


def cli(args: list[str], capsys) -> str:
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


class RecommenderBase:
    """Inherit and set ``params``; ``fitted`` is trained once per class on a CSV log (string ids)."""

    params: ClassVar[dict[str, Any]] = {}

    # -- fixtures -------------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def log_path(cls, tmp_path_factory) -> Path:
        path = tmp_path_factory.mktemp("log") / "log.csv"
        community_log().to_csv(path, index=False)
        return path

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, log_path) -> HQGNN:
        model = HQGNN(**FAST, **cls.params)
        out = model.fit(str(log_path), user_col="uid", item_col="iid")
        assert out is model
        return model

    @pytest.fixture(scope="class")
    @classmethod
    def saved(cls, fitted, tmp_path_factory) -> Path:
        return fitted.save(tmp_path_factory.mktemp("saved") / "run")

    @pytest.fixture(scope="class")
    @classmethod
    def cli_run(cls, log_path, tmp_path_factory) -> Path:
        out = tmp_path_factory.mktemp("cli") / "run"
        args = ["train", "--data", str(log_path), "--out", str(out), "-q", "--set", "data.user_col=uid",
                "--set", "data.item_col=iid"]
        for name, value in {**FAST, **cls.params}.items():
            (section,) = _field_sections()[name]
            args += ["--set", f"{section}.{name}={value}"]
        main(args)
        return out

    # -- fit and ids ----------------------------------------------------------------------------------
    def test_ids_round_trip(self, fitted):
        log = community_log()
        assert sorted(fitted.user_ids.tolist()) == sorted(set(log["uid"]))
        assert set(fitted.item_ids.tolist()) <= set(log["iid"])
        assert fitted.user_ids.dtype.kind == "U" and fitted.item_ids.dtype.kind == "U"
        assert fitted.config.quant.bits == self.params.get("bits", 0)

    def test_recommend_shapes_ids_and_order(self, fitted):
        users = fitted.user_ids[:6]
        ids, scores = fitted.recommend(users, k=7)
        assert ids.shape == scores.shape == (6, 7)
        assert set(ids.ravel().tolist()) <= set(fitted.item_ids.tolist())
        assert np.all(np.diff(scores, axis=1) <= 0)
        one_ids, one_scores = fitted.recommend(users[2], k=7)  # a single id: one row
        np.testing.assert_array_equal(one_ids[0], ids[2])

    def test_batch_and_single_scores_are_bit_identical(self, fitted):
        """A user's list and scores do not depend on who else is in the call (no shape-dependent sums)."""
        users = fitted.user_ids
        ids, scores = fitted.recommend(users, k=9)
        rng = np.random.default_rng(0)
        for size in (1, 2, 3, 5, 7, 33):
            pick = rng.choice(len(users), size=size, replace=False)
            sub_ids, sub_scores = fitted.recommend(users[pick], k=9)
            np.testing.assert_array_equal(sub_ids, ids[pick])
            assert sub_scores.tobytes() == scores[pick].tobytes(), f"batch of {size}"
        items = fitted.item_ids
        sim_ids, sim_scores = fitted.similar_items(items, k=5)
        for i in rng.choice(len(items), size=4, replace=False):
            one_ids, one_scores = fitted.similar_items(items[i], k=5)
            np.testing.assert_array_equal(one_ids[0], sim_ids[i])
            assert one_scores[0].tobytes() == sim_scores[i].tobytes()

    def test_recommend_equals_brute_force(self, fitted):
        """Scores are inner products of what is stored: floats, or codes x scales (float64 reference)."""
        t = {k: v.double().numpy() for k, v in fitted.run.tables.items()}
        si = t["item_scale"].reshape(1, -1) if "item_scale" in t and t["item_scale"].ndim else t.get("item_scale")
        if "user_query" in t:  # float queries against item codes
            full = (t["user_query"] @ t["item_codes"].T) * si
        elif "user_codes" in t:
            su = t["user_scale"].reshape(-1, 1) if t["user_scale"].ndim else t["user_scale"]
            full = (t["user_codes"] @ t["item_codes"].T) * su * si
        else:
            full = t["user_emb"] @ t["item_emb"].T
        if "item_term" in t:  # centered codes with quantized queries: the stored per-item term
            full = full + t["item_term"].reshape(1, -1)
        seen = fitted.run.seen.toarray() > 0
        full[seen] = -np.inf
        k = 10
        ids, scores = fitted.recommend(fitted.user_ids, k=k)
        want = -np.sort(-full, axis=1)[:, :k]
        np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-7)
        rows = pd.Index(fitted.item_ids).get_indexer(ids.ravel()).reshape(ids.shape)
        np.testing.assert_allclose(np.take_along_axis(full, rows, 1), scores, rtol=1e-5, atol=1e-7)

    def test_exclude_seen(self, fitted):
        n_items = len(fitted.item_ids)
        users = fitted.user_ids
        ids, _ = fitted.recommend(users, k=10)
        seen = fitted.run.seen
        for r, u in enumerate(users):
            row = seen[r]
            seen_ids = set(fitted.item_ids[row.indices].tolist())
            assert not seen_ids & set(ids[r].tolist())
        all_ids, all_scores = fitted.recommend(users[:3], k=n_items, exclude_seen=False)
        assert np.isfinite(all_scores).all()
        for r in range(3):
            assert sorted(all_ids[r].tolist()) == sorted(fitted.item_ids.tolist())
        # more than the unseen items: the tail is padded with "" / -inf
        ids, scores = fitted.recommend(users[:1], k=n_items)
        n_unseen = n_items - seen[0].nnz
        assert np.isneginf(scores[0, n_unseen:]).all() and (ids[0, n_unseen:] == "").all()
        assert np.isfinite(scores[0, :n_unseen]).all()

    def test_unknown_ids_raise(self, fitted):
        with pytest.raises(HqgnnError, match="unknown user 'nobody'"):
            fitted.recommend("nobody")
        with pytest.raises(HqgnnError, match="unknown item"):
            fitted.similar_items(["nothing"])
        with pytest.raises(HqgnnError, match="k must be"):
            fitted.recommend(fitted.user_ids[:1], k=0)

    def test_several_users_answer_per_user_like_the_http_batch(self, fitted):
        """One unknown user does not fail the call: its row is padding, a warning names it, the others are
        answered as alone; recommend_batch() gives POST /recommend/batch's structure."""
        known = list(fitted.user_ids[:3])
        users = [known[0], "nobody", known[1], known[2]]
        with pytest.warns(UserWarning, match="1 of 4 users unknown"):
            ids, scores = fitted.recommend(users, k=5)
        want_ids, want_scores = fitted.recommend(known, k=5)
        np.testing.assert_array_equal(ids[[0, 2, 3]], want_ids)
        assert scores[[0, 2, 3]].tobytes() == want_scores.tobytes()
        assert np.all(np.isneginf(scores[1])) and set(ids[1].tolist()) == {"" if ids.dtype.kind == "U" else -1}
        batch = fitted.recommend_batch(users, k=5)
        assert batch["unknown_users"] == ["nobody"]
        assert batch["results"][1] == {"user": "nobody", "items": [], "error": "unknown user 'nobody'"}
        for r, j in ((0, 0), (2, 1), (3, 2)):
            entry = batch["results"][r]
            assert entry["user"] == known[j] and "error" not in entry
            assert [e["item"] for e in entry["items"]] == [i for i in want_ids[j].tolist() if i not in ("", -1)]

    def test_evaluate_remembers_the_fit_columns(self, fitted):
        """fit(user_col=..., item_col=...) is remembered: evaluate(test_df) needs no column names again."""
        log = community_log()
        assert fitted.config.data.user_col == "uid" and fitted.config.data.item_col == "iid"
        assert fitted.evaluate(log, ks=[5]) == fitted.evaluate(log, ks=[5], user_col="uid", item_col="iid")

    def test_similar_items(self, fitted):
        items = fitted.item_ids[:5]
        ids, scores = fitted.similar_items(items, k=6)
        assert ids.shape == scores.shape == (5, 6)
        for r, it in enumerate(items):
            assert it not in ids[r].tolist()
        assert np.all(np.diff(scores, axis=1) <= 0)

    # -- evaluation -----------------------------------------------------------------------------------
    def test_evaluate(self, fitted):
        m = fitted.evaluate(ks=(5, 10))
        assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "precision", "hit_rate") for k in (5, 10)}
        assert all(0.0 <= v <= 1.0 for v in m.values())
        assert m["recall@10"] >= m["recall@5"]
        # the default test split equals the one training evaluated on
        want = fitted.metrics["test"]
        got = fitted.evaluate(ks=(20, 50))
        for key in want:
            assert got[key] == want[key], key

    def test_evaluate_given_test_data(self, fitted, log_path):
        """Held-out data as a DataFrame, a CSR in the model's id space and id arrays: the same metrics."""
        from hqgnn.data import load_dataset

        cfg = fitted.config
        ds = load_dataset(cfg.data)
        test = pd.DataFrame({"uid": ds.user_ids[ds.test[:, 0]], "iid": ds.item_ids[ds.test[:, 1]]})
        via_df = fitted.evaluate(test, user_col="uid", item_col="iid")
        via_arrays = fitted.evaluate((test["uid"].to_numpy(), test["iid"].to_numpy()))
        assert via_df == via_arrays == fitted.evaluate()

    # -- persistence, both ways with the CLI ----------------------------------------------------------
    def test_save_load_round_trip(self, fitted, saved):
        loaded = HQGNN.load(saved)
        assert loaded.user_ids.dtype == fitted.user_ids.dtype
        np.testing.assert_array_equal(loaded.item_ids, fitted.item_ids)
        a, sa = fitted.recommend(fitted.user_ids, k=8)
        b, sb = loaded.recommend(fitted.user_ids, k=8)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(loaded.similar_items(fitted.item_ids[:4], 5)[0],
                                      fitted.similar_items(fitted.item_ids[:4], 5)[0])
        assert loaded.evaluate() == fitted.evaluate()

    def test_saved_run_serves_through_the_cli(self, fitted, saved, capsys):
        for user in fitted.user_ids[:3]:
            out = json.loads(cli(["recommend", str(saved), "--user", str(user), "-k", "5", "--json"], capsys))
            ids, scores = fitted.recommend([user], k=5)
            assert [r["item"] for r in out["items"]] == ids[0].tolist()
            np.testing.assert_allclose([r["score"] for r in out["items"]], scores[0], rtol=1e-6)
        got = json.loads(cli(["evaluate", str(saved), "--json", "--device", "cpu"], capsys))
        assert got == fitted.evaluate()

    def test_cli_run_loads_into_the_estimator(self, cli_run, fitted, capsys):
        model = HQGNN.load(cli_run)
        assert model.config.quant.bits == self.params.get("bits", 0)
        for user in model.user_ids[:3]:
            out = json.loads(cli(["recommend", str(cli_run), "--user", str(user), "-k", "5", "--json"], capsys))
            ids, _ = model.recommend([user], k=5)
            assert [r["item"] for r in out["items"]] == ids[0].tolist()
        got = json.loads(cli(["evaluate", str(cli_run), "--json", "--device", "cpu"], capsys))
        assert model.evaluate() == got
        assert got == model.metrics["test"]  # training-time evaluation ranks exactly as serving does
        # the same config and data: the CLI and the estimator train the same model
        np.testing.assert_array_equal(model.recommend(model.user_ids, 10)[0], fitted.recommend(model.user_ids, 10)[0])

    def test_in_memory_inputs_agree(self, fitted):
        """A DataFrame, a CSR matrix and (users, items) arrays of the same int-keyed pairs train the same model."""
        log = community_log()
        u = log["uid"].str.slice(5).astype(int).to_numpy()
        i = log["iid"].str.slice(5).astype(int).to_numpy()
        m = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(u.max() + 1, i.max() + 1))
        a = HQGNN(**FAST, **self.params).fit(pd.DataFrame({"user": u, "item": i}))
        b = HQGNN(**FAST, **self.params).fit(m)
        c = HQGNN(**FAST, **self.params).fit((u, i))
        assert a.user_ids.dtype == np.int64
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
        ra, rb, rc = (x.recommend([0, 1, 2], k=5) for x in (a, b, c))
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[0], rc[0])
        with pytest.raises(HqgnnError, match="no test data"):
            a.evaluate()
