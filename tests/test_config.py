"""RunConfig.validate: the one validation path of the CLI, the Python API and TOML loading."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from hqgnn.cli import main
from hqgnn.config import METRIC_NAMES, QUANT_ESTIMATORS, RULES, SECTIONS, RunConfig, load_config
from hqgnn.errors import HqgnnError


def cli_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return " ".join(err.split())


def test_defaults_validate_and_auto_estimator_resolves():
    cfg = RunConfig().validate()
    assert cfg.quant.estimator == "none"
    cfg = RunConfig()
    cfg.quant.bits = 1
    assert cfg.validate().quant.estimator == "gste"


@pytest.mark.parametrize(
    "section, name, value, message",
    [
        ("train", "lr", "abc", "train.lr: expected float, got 'abc'"),
        ("train", "epochs", 2.5, "train.epochs: expected int, got 2.5"),
        ("train", "cuda_graph", "yes", "train.cuda_graph: expected bool, got 'yes'"),
        ("model", "dim", True, "model.dim: expected int, got True"),
        ("eval", "ks", [20, "x"], "eval.ks[1]: expected int, got 'x'"),
        ("quant", "bits", 9, "quant.bits must be in [0, 8], got 9"),
        ("train", "lr", 0.0, "train.lr must be > 0, got 0.0"),
        ("data", "val_ratio", 1.0, "data.val_ratio must be in [0, 1), got 1.0"),
        ("eval", "ks", [0, 20], "eval.ks must be >= 1, got 0"),
        ("train", "sampling", "users", "train.sampling must be one of edge, user, got 'users'; did you mean 'user'?"),
        ("train", "device", "gpu", "train.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("quant", "estimator", "ewgs", "quant.estimator must be one of auto, none, ste, gste, got 'ewgs'"),
        ("train", "select_metric", "recall@10", "train.select_metric 'recall@10' is not evaluated"),
        ("train", "select_metric", "recal@20", "did you mean 'recall@20'?"),
    ],
)
def test_bad_values_raise_one_line(section, name, value, message):
    cfg = RunConfig()
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(HqgnnError) as exc:
        cfg.validate()
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_values_are_normalised():
    cfg = RunConfig()
    cfg.train.lr, cfg.eval.ks, cfg.train.select_metric = 1, (10, 20), "ndcg@10"
    cfg.validate()
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float and cfg.eval.ks == [10, 20]


def test_estimator_against_bits_is_one_rule():
    cfg = RunConfig()
    cfg.quant.bits, cfg.quant.estimator = 2, "none"
    with pytest.raises(HqgnnError, match="quant.estimator none means full precision"):
        cfg.validate()
    cfg = RunConfig()
    cfg.quant.estimator = "ste"
    with pytest.raises(HqgnnError, match="needs quant.bits 1..8"):
        cfg.validate()
    for est in QUANT_ESTIMATORS:
        cfg = RunConfig()
        cfg.quant.bits, cfg.quant.estimator = 4, est
        assert cfg.validate().quant.estimator == est


def test_misspelt_attribute_is_an_error_with_a_hint():
    cfg = RunConfig()
    cfg.train.learning_rat = 0.1  # a typo that Python accepts silently
    with pytest.raises(HqgnnError, match=r"unknown config key 'train.learning_rat'"):
        cfg.validate()
    with pytest.raises(HqgnnError, match=r"did you mean 'select_metric'"):
        RunConfig().set("train.select_metrc", "recall@20")
    with pytest.raises(HqgnnError, match=r"did you mean 'train'"):
        RunConfig().set("trian.lr", "0.1")


def test_every_field_is_type_checked_from_its_annotation():
    """Driven by the dataclass fields, so a field added later is checked without touching validate()."""
    wrong = {int: "x", float: "x", bool: "x", str: 3}
    for section in SECTIONS:
        target_cls = type(getattr(RunConfig(), section))
        hints = typing.get_type_hints(target_cls)
        for f in dataclasses.fields(target_cls):
            hint = hints[f.name]
            value = [object()] if typing.get_origin(hint) is list else wrong[hint]
            cfg = RunConfig()
            setattr(getattr(cfg, section), f.name, value)
            with pytest.raises(HqgnnError, match=rf"{section}\.{f.name}"):
                cfg.validate()


def test_rules_name_real_fields():
    fields = {f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(type(getattr(RunConfig(), s)))}
    assert set(RULES) <= fields, set(RULES) - fields


def test_metric_names_are_the_evaluators():
    from hqgnn.eval.metrics import METRICS

    assert tuple(METRICS) == METRIC_NAMES


def test_toml_cli_and_api_share_the_error_text(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[quant]\nbits = 9\n")
    with pytest.raises(HqgnnError) as toml_exc:
        load_config(path)
    cfg = RunConfig()
    cfg.quant.bits = 9
    with pytest.raises(HqgnnError) as api_exc:
        cfg.validate()
    text = str(api_exc.value)
    assert str(toml_exc.value) == f"{path}: {text}"
    assert text in cli_error(["train", "--bits", "9", "--out", str(tmp_path / "r")], capsys)
    assert text in cli_error(["train", "--config", str(path), "--out", str(tmp_path / "r")], capsys)


def test_cli_rejects_a_select_metric_that_is_not_evaluated(tmp_path, capsys):
    err = cli_error(["train", "--set", "train.select_metric=recall@10", "--out", str(tmp_path / "r")], capsys)
    assert "train.select_metric 'recall@10' is not evaluated" in err
    assert not (tmp_path / "r").exists()  # rejected before anything is written
