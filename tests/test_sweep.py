"""The validation-selected sweep (hqgnn.train.sweep, `hqgnn sweep`): grid, selection, refit, resume, errors."""

import json

import pytest

import run_helpers
from hqgnn.cli import main
from hqgnn.config import load_config
from hqgnn.errors import HqgnnError
from hqgnn.train import sweep as sweep_mod
from hqgnn.train.sweep import candidates, parse_grid, run_sweep


def base_config():
    cfg = run_helpers.small_config(300, 200, 8, 4, 1, 512)
    cfg.data.val_ratio = 0.1
    return cfg


# -- the grid ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("items, message", [
    ([], "at least one --grid"),
    (["train.reg"], "expects section.field=v1,v2"),
    (["train.reg=1e-4,"], "expects section.field=v1,v2"),
    (["=1,2"], "expects section.field=v1,v2"),
    (["train.reg=1e-4", "train.reg=2e-4"], "given twice"),
])
def test_bad_grids_are_one_line_errors(items, message):
    with pytest.raises(HqgnnError, match=message):
        parse_grid(items)


def test_candidates_are_the_product_in_grid_order_and_typed():
    points = candidates(base_config(), parse_grid(["train.reg=1e-4,1e-3", "model.dim=4,8,16"]))
    assert [name for name, _, _ in points] == [
        "c00_reg=1e-4_dim=4", "c01_reg=1e-4_dim=8", "c02_reg=1e-4_dim=16",
        "c03_reg=1e-3_dim=4", "c04_reg=1e-3_dim=8", "c05_reg=1e-3_dim=16"]
    _, overrides, cfg = points[4]
    assert overrides == {"train.reg": 1e-3, "model.dim": 8}
    assert cfg.train.reg == 1e-3 and cfg.model.dim == 8 and cfg.train.refit is False


@pytest.mark.parametrize("key, message", [
    ("data.val_ratio=0.1,0.2", "validation split"),
    ("eval.ks=10,20", "what is measured"),
    ("train.select_metric=ndcg@20,recall@20", "one metric"),
    ("train.refit=true,false", "--refit"),
    ("train.protocol=validation,paper", "selects on validation"),
])
def test_fields_that_would_break_the_comparison_are_refused(key, message):
    with pytest.raises(HqgnnError, match=message):
        candidates(base_config(), parse_grid([key]))


def test_every_candidate_is_validated_before_any_training(tmp_path):
    with pytest.raises(HqgnnError, match=r"--grid .*train.lr.*(>|positive)"):
        run_sweep(base_config(), parse_grid(["train.lr=1e-3,-1"]), tmp_path / "s")
    assert not (tmp_path / "s").exists()
    with pytest.raises(HqgnnError, match="unknown setting"):
        candidates(base_config(), parse_grid(["train.learning_rate=1e-3"]))


def test_an_empty_python_grid_is_an_error():
    with pytest.raises(HqgnnError, match="train.reg: no values"):
        candidates(base_config(), {"train.reg": []})
    with pytest.raises(HqgnnError, match="at least one"):
        candidates(base_config(), {})


def test_a_paper_protocol_base_is_refused():
    cfg = base_config()
    cfg.train.protocol, cfg.data.val_ratio = "paper", 0.0
    with pytest.raises(HqgnnError, match="train.protocol=validation"):
        candidates(cfg, parse_grid(["train.reg=1e-4"]))


# -- a real sweep ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    # reg 30 crushes the embeddings: a clear loser on validation
    result = run_sweep(base_config(), parse_grid(["train.reg=1e-4,30"]), out)
    return out, result


def test_the_winner_is_the_best_validation_candidate(finished):
    out, result = finished
    summary = json.loads((out / "sweep.json").read_text())
    metric = summary["select_metric"]
    # the reference: each candidate's own metrics.json, read back from its run directory
    vals = {row["name"]: json.loads((out / row["run_dir"] / "metrics.json").read_text())["val"][metric]
            for row in summary["candidates"]}
    assert summary["winner"] == result.winner == max(vals, key=vals.get) == "c00_reg=1e-4"
    assert vals["c00_reg=1e-4"] > vals["c01_reg=30"]
    assert [r["val"][metric] for r in summary["candidates"]] == list(vals.values())
    assert summary["selected_on"] == "validation"


def test_test_numbers_are_reported_for_the_winner_only(finished):
    out, result = finished
    summary = json.loads((out / "sweep.json").read_text())
    assert all("test" not in row for row in summary["candidates"])
    winner_metrics = json.loads((out / "candidates" / result.winner / "metrics.json").read_text())
    assert summary["final"]["test"] == winner_metrics["test"] and summary["final"]["protocol"] == "validation"


def test_best_toml_is_the_winners_config(finished):
    out, result = finished
    best = load_config(out / "best.toml")
    assert best.to_dict() == result.config.to_dict()
    assert best.train.reg == 1e-4 and best.train.refit is False
    assert (out / "candidates" / result.winner / "config.toml").read_text() == (out / "best.toml").read_text()


def test_resume_reuses_finished_candidates(finished, monkeypatch):
    out, _ = finished
    with pytest.raises(HqgnnError, match="already holds files; pass --resume"):
        run_sweep(base_config(), parse_grid(["train.reg=1e-4,30"]), out)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished candidate was trained again")

    monkeypatch.setattr(sweep_mod, "run_training", must_not_train)
    again = run_sweep(base_config(), parse_grid(["train.reg=1e-4,30"]), out, resume=True)
    assert again.winner == "c00_reg=1e-4"
    changed = base_config()
    changed.train.epochs = 5
    with pytest.raises(HqgnnError, match="another config"):
        run_sweep(changed, parse_grid(["train.reg=1e-4,30"]), out, resume=True)


def test_selection_reads_validation_never_test(tmp_path, monkeypatch):
    """Stand-in runs whose validation and test orders disagree: the sweep must follow validation."""
    from hqgnn.config import dump_config

    def fake_run(cfg, run_dir, resume=False, progress=False):
        run_dir.mkdir(parents=True)
        (run_dir / "config.toml").write_text(dump_config(cfg))
        metrics = {"val": {"recall@20": cfg.train.reg}, "test": {"recall@20": -cfg.train.reg}, "best_epoch": 1,
                   "epochs_run": 1, "train_seconds": 0.0, "protocol": "validation"}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(sweep_mod, "run_training", fake_run)
    result = run_sweep(base_config(), parse_grid(["train.reg=0.1,0.3,0.2"]), tmp_path / "s")
    assert result.winner == "c01_reg=0.3" and result.summary["final"]["test"] == {"recall@20": -0.3}


def test_equal_candidates_tie_to_the_first(tmp_path):
    result = run_sweep(base_config(), parse_grid(["train.seed=3,3"]), tmp_path / "s")
    rows = result.summary["candidates"]
    assert rows[0]["val"] == rows[1]["val"]  # same seed, same run
    assert result.winner == "c00_seed=3"


def test_refit_retrains_the_winner_on_train_and_validation(tmp_path):
    """A base config asking for the refit (as the presets do) gets it for the winner; the candidates select."""
    out = tmp_path / "s"
    base = base_config()
    base.train.refit = True
    result = run_sweep(base, parse_grid(["train.reg=1e-4,30"]), out)
    assert json.loads((out / "candidates" / "c01_reg=30" / "metrics.json").read_text())["protocol"] == "validation"
    final = json.loads((out / "best" / "metrics.json").read_text())
    assert final["protocol"] == "validation+refit" and final["refit"]["epochs"] == final["best_epoch"]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["final"]["run_dir"] == "best" and summary["final"]["test"] == final["test"]
    assert load_config(out / "best.toml").train.refit is True and result.config.train.refit is True


# -- the command line --------------------------------------------------------------------------------
FAST = ["--set", "data.synthetic_users=300", "--set", "data.synthetic_items=200", "--set", "model.dim=8",
        "--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "train.batch_size=512", "--device", "cpu"]


def test_cli_sweep_prints_validation_and_the_winners_test(tmp_path, capsys):
    main(["sweep", "--grid", "train.reg=1e-4,30", "--refit", "--out", str(tmp_path / "s"), "-q", *FAST])
    printed = capsys.readouterr()
    text, err = " ".join(printed.out.split()), " ".join(printed.err.split())  # rich wraps at the width
    assert "val recall@20" in text and "test metrics of the winner c00_reg=1e-4 (validation+refit)" in text
    assert "c00 *" in text and "winner c00_reg=1e-4" in err
    summary = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert summary["winner"] == "c00_reg=1e-4" and summary["final"]["run_dir"] == "best"


def test_cli_sweep_bad_grid_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--grid", "data.val_ratio=0.1,0.2", "--out", str(tmp_path / "s"), *FAST])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --grid data.val_ratio")
    assert not (tmp_path / "s").exists()
