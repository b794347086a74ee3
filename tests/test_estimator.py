"""The ``hqgnn.HQGNN`` estimator: every model variant runs the shared behavioural tests, plus its own checks."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hqgnn import HQGNN
from hqgnn.config import RunConfig
from hqgnn.errors import HqgnnError
from recommender_base import FAST, RecommenderBase, community_log


class TestFullPrecision(RecommenderBase):
    params = {}


class TestOneBit(RecommenderBase):
    params = {"bits": 1}


class TestFourBit(RecommenderBase):
    params = {"bits": 4, "estimator": "ste"}


class TestOneBitFloatQueriesCentered(RecommenderBase):
    """The frontier's asymmetric format: float queries, centered items, float16 scales."""

    params = {"bits": 1, "estimator": "ste", "user_bits": 0, "center": True, "scale_dtype": "float16"}


class TestOneBitLayerwise(RecommenderBase):
    """BiGeaR-style multi-layer codes: every LightGCN layer coded, concatenated, float queries."""

    params = {"bits": 1, "estimator": "ste", "user_bits": 0, "layerwise": True}


class TestOneBitFourBitQueriesCentered(RecommenderBase):
    """4-bit queries against 1-bit items, centered (a stored per-item term)."""

    params = {"bits": 1, "estimator": "ste", "user_bits": 4, "center": True}


def test_signature_defaults_are_the_config_defaults():
    cfg = RunConfig()
    want = {"dim": cfg.model.dim, "layers": cfg.model.layers, "bits": cfg.quant.bits, "epochs": cfg.train.epochs,
            "lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "device": cfg.train.device, "seed": cfg.train.seed}
    sig = inspect.signature(HQGNN.__init__)
    assert {k: sig.parameters[k].default for k in want} == want
    assert cfg.data.seed == cfg.train.seed


def test_parameters_are_config_fields_and_validated_at_once():
    m = HQGNN(val_ratio=0.05, sampling="user", **{"train.seed": 7})
    assert m.config.data.val_ratio == 0.05 and m.config.train.sampling == "user" and m.config.train.seed == 7
    assert m.config.data.seed == 2020
    assert HQGNN(bits=2).config.quant.estimator == "gste"
    with pytest.raises(HqgnnError, match="train.lr: expected float, got 'abc'"):
        HQGNN(lr="abc")
    with pytest.raises(HqgnnError, match="did you mean 'val_ratio'"):
        HQGNN(val_ration=0.1)
    with pytest.raises(HqgnnError, match="quant.estimator none means full precision"):
        HQGNN(bits=1, estimator="none")
    with pytest.raises(HqgnnError, match="train.select_metric 'recall@10' is not evaluated"):
        HQGNN(select_metric="recall@10")
    HQGNN(select_metric="recall@10", ks=[10])


def test_same_error_text_as_the_cli(capsys, tmp_path):
    from test_config import cli_error

    with pytest.raises(HqgnnError) as exc:
        HQGNN(bits=9)
    assert str(exc.value) in cli_error(["train", "--bits", "9", "--out", str(tmp_path / "r")], capsys)


def test_fit_prints_nothing(tmp_path):
    """In a fresh interpreter (no logging configured): fit, recommend, save and load write nothing."""
    script = tmp_path / "quiet.py"
    script.write_text(
        "from hqgnn import HQGNN\n"
        "from recommender_base import FAST, community_log\n"
        f"m = HQGNN(**{{**FAST, 'epochs': 1}}).fit(community_log(), user_col='uid', item_col='iid')\n"
        "m.recommend(m.user_ids[:2]); m.similar_items(m.item_ids[:2])\n"
        f"HQGNN.load(m.save({str(tmp_path / 'run')!r})).recommend(m.user_ids[:1])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""


def test_progress_goes_to_logging(caplog):
    caplog.set_level(logging.INFO, logger="hqgnn")
    HQGNN(**{**FAST, "epochs": 1}).fit(community_log(), user_col="uid", item_col="iid")
    assert any("data in-memory" in r.getMessage() for r in caplog.records)


def test_validation_data_is_used_for_selection():
    log = community_log()
    val = log.groupby("uid").head(2)
    train = log.drop(val.index)
    m = HQGNN(**FAST).fit(train, user_col="uid", item_col="iid", validation=val)
    assert m.metrics["data"]["val"] == len(val)
    assert m.metrics["data"]["train"] == len(train)
    assert set(m.metrics["val"]) >= {"recall@20"}


def test_time_column_carves_the_latest_pair_per_user_for_validation():
    log = community_log()
    log["ts"] = np.arange(len(log))
    m = HQGNN(**FAST).fit(log, user_col="uid", item_col="iid", time_col="ts")
    assert m.metrics["data"]["val"] == log["uid"].nunique()


def test_bad_input_is_one_clear_error():
    with pytest.raises(HqgnnError, match="no column 'user'"):
        HQGNN(**FAST).fit(community_log())
    with pytest.raises(HqgnnError, match="cannot read interactions from a list"):
        HQGNN(**FAST).fit([1, 2, 3])
    with pytest.raises(HqgnnError, match="equal lengths"):
        HQGNN(**FAST).fit((np.arange(3), np.arange(4)))
    with pytest.raises(HqgnnError, match="not fitted"):
        HQGNN().recommend([1])
    df = pd.DataFrame({"user": [1, None], "item": [1, 2]})
    with pytest.raises(HqgnnError, match="missing user id"):
        HQGNN(**FAST).fit(df)


# -- sweep: selection on validation from a DataFrame ------------------------------------------------
def test_sweep_selects_on_validation_and_returns_the_fitted_winner():
    log = community_log()
    base = HQGNN(**FAST)
    winner, rows = base.sweep(log, {"train.reg": [1e-4, 30.0]}, user_col="uid", item_col="iid")
    assert [r["name"] for r in rows] == ["c00_reg=0.0001", "c01_reg=30.0"]
    vals = [r["val"]["recall@20"] for r in rows]
    assert vals[0] > vals[1]  # reg 30 crushes the embeddings
    assert winner.fitted and winner.config.train.reg == 1e-4
    assert winner.metrics["val"]["recall@20"] == vals[0]  # the returned model is the selected candidate
    assert all("test" not in r for r in rows)
    assert base.config.train.reg == RunConfig().train.reg and not base.fitted  # the base is left as it was
    items, _ = winner.recommend(["user-0"], k=5)
    assert items.shape == (1, 5)


def test_sweep_refit_and_grid_rules():
    log = community_log()
    winner, rows = HQGNN(**FAST).sweep(log, {"train.lr": [5e-3]}, user_col="uid", item_col="iid", refit=True)
    assert winner.metrics["protocol"] == "validation+refit" and winner.metrics["refit"]["epochs"] == rows[0]["best_epoch"]
    with pytest.raises(HqgnnError, match="not a sweep dimension"):
        HQGNN(**FAST).sweep(log, {"data.val_ratio": [0.1, 0.2]}, user_col="uid", item_col="iid")
    with pytest.raises(HqgnnError, match="expected float"):
        HQGNN(**FAST).sweep(log, {"train.lr": [1e-3, "fast"]}, user_col="uid", item_col="iid")


def test_from_config_reads_a_preset_and_takes_overrides():
    repo = Path(__file__).resolve().parents[1]
    preset = repo / "configs" / "lightgcn_yelp2018.toml"
    from hqgnn.config import load_config

    m = HQGNN.from_config(preset, reg=4e-4, dim=16, **{"train.seed": 3})
    want = load_config(preset)
    want.train.reg, want.model.dim, want.train.seed = 4e-4, 16, 3
    assert m.get_params() == HQGNN._of_config(want.validate()).get_params()
    assert m.config.train.negatives == 8 and m.config.train.refit is True and m.config.data.seed == want.data.seed
    both = HQGNN.from_config(preset, seed=11).config
    assert both.data.seed == both.train.seed == 11
    with pytest.raises(HqgnnError, match="expected float"):
        HQGNN.from_config(preset, reg="strong")
    with pytest.raises(HqgnnError, match="config file not found"):
        HQGNN.from_config(repo / "configs" / "missing.toml")
    fitted = HQGNN.from_config(preset, **{**FAST, "max_seconds": 0.0, "epochs": 2, "warmup_epochs": 0.0}).fit(
        community_log(), user_col="uid", item_col="iid")
    assert fitted.metrics["protocol"] == "validation+refit"


def test_a_dataframe_fitted_run_is_evaluated_by_the_cli(tmp_path, capsys):
    """HQGNN.fit(df).save(d) then ``hqgnn evaluate d --data test.csv``: the fit's columns are remembered, the
    metrics equal HQGNN.evaluate(test_df), and without --data the command says what it needs in one line."""
    import json

    from hqgnn.cli import main

    log = community_log()
    train, test = log.iloc[:1000], log.iloc[1000:]
    model = HQGNN(**FAST).fit(train, user_col="uid", item_col="iid")
    model.save(tmp_path / "run")
    test.to_csv(tmp_path / "test.csv", index=False)
    want = model.evaluate(test, ks=[5, 10])
    main(["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "test.csv"), "--k", "5,10", "--json"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got == pytest.approx(want)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "run")])
    assert exc.value.code == 1 and "pass the test interactions with --data" in capsys.readouterr().err
