"""`hqgnn config`: every field documented once (config.FIELD_HELP), listed with type / default / range, a
commented TOML that `hqgnn train --config` reads back, and full names suggested for short ones in --set."""

import dataclasses
import json
import tomllib

import pytest

from hqgnn.config import RULES, SECTIONS, RunConfig, load_config
from hqgnn.config_docs import FIELD_HELP, config_fields, config_toml
from hqgnn.errors import HqgnnError
from run_helpers import run_cli




def all_field_names() -> list[str]:
    cfg = RunConfig()
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))]


def test_every_field_has_one_line_of_help_and_no_stale_entries():
    names = all_field_names()
    assert sorted(FIELD_HELP) == sorted(names)  # a new field must be documented; a removed one un-documented
    for name in names:
        assert FIELD_HELP[name].strip() and "\n" not in FIELD_HELP[name], name


def test_listing_reports_types_defaults_and_ranges_from_the_config():
    docs = {d.name: d for d in config_fields()}
    assert list(docs) == all_field_names()
    defaults = RunConfig()
    for name, doc in docs.items():
        section, _, key = name.partition(".")
        assert doc.default == getattr(getattr(defaults, section), key)
        if name in RULES and not callable(RULES[name]):
            assert doc.range, f"{name} has a rule but no range in the listing"
    assert docs["quant.bits"].range == "[0, 8]"
    assert docs["data.val_ratio"].range == "[0, 1)"
    assert docs["train.lr"].range == "> 0" and docs["train.lr"].type == "float"
    assert docs["train.sampling"].range == "edge | user"
    assert docs["train.device"].range == "auto | cpu | cuda | cuda:N"
    assert docs["eval.ks"].type == "list[int]" and docs["eval.ks"].range == "each >= 1"
    assert docs["train.refit"].range == "true | false"


def test_hqgnn_config_prints_one_line_per_field(capsys):
    code, out, _ = run_cli(["config"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["field", "type", "default", "range"]
    body = {line.split()[0]: line for line in lines[1:]}
    assert list(body) == all_field_names()
    assert "float" in body["train.lr"] and "0.001" in body["train.lr"] and FIELD_HELP["train.lr"] in body["train.lr"]


def test_hqgnn_config_shows_overrides_next_to_the_default(capsys):
    code, out, _ = run_cli(["config", "--set", "train.lr=0.01"], capsys)
    assert code == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith("train.lr ")]
    assert "0.01" in line and "(default 0.001)" in line


def test_toml_round_trip_defaults_and_overrides(tmp_path, capsys):
    assert RunConfig.from_dict(tomllib.loads(config_toml())).to_dict() == RunConfig().validate().to_dict()
    code, out, _ = run_cli(["config", "--toml", "--set", "model.dim=24", "--set", "eval.ks=10,30",
                            "--set", "train.select_metric=ndcg@30"], capsys)
    assert code == 0
    path = tmp_path / "c.toml"
    path.write_text(out)
    raw = tomllib.loads(out)
    assert set(raw) == set(SECTIONS)
    assert sum(len(v) for v in raw.values()) == len(FIELD_HELP)  # complete: every field is written
    cfg = load_config(path)
    assert cfg.model.dim == 24 and cfg.eval.ks == [10, 30] and cfg.train.select_metric == "ndcg@30"
    assert "# " + FIELD_HELP["model.dim"] in out


def test_hqgnn_train_accepts_the_printed_toml(tmp_path, capsys):
    code, out, _ = run_cli(["config", "--toml", "--set", "data.synthetic_users=200", "--set",
                            "data.synthetic_items=150", "--set", "model.dim=8", "--set", "train.epochs=1",
                            "--set", "train.eval_every=1", "--set", "train.device=cpu"], capsys)
    assert code == 0
    path = tmp_path / "c.toml"
    path.write_text(out)
    code, _, err = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    assert "dim = 8" in (tmp_path / "run" / "config.toml").read_text()


@pytest.mark.parametrize("name, expected", [
    ("lr", "unknown field 'lr'; did you mean train.lr?"),
    ("sampling", "unknown field 'sampling'; did you mean train.sampling?"),
    ("seed", "unknown field 'seed'; did you mean data.seed or train.seed?"),
    ("model.lr", "unknown field 'model.lr'; did you mean train.lr?"),
])
def test_short_or_misplaced_names_suggest_the_full_one(name, expected, capsys):
    with pytest.raises(HqgnnError) as exc:
        RunConfig().set(name, "0.1")
    assert str(exc.value) == expected
    code, _, err = run_cli(["train", "--set", f"{name}=0.1", "--out", "unused"], capsys)
    assert code == 2  # a --set that names no field is a usage error
    assert err.strip() == f"error: --set {name}=0.1: {expected}"


def test_names_without_a_field_anywhere_keep_their_hint():
    with pytest.raises(HqgnnError, match=r"did you mean 'lr'"):
        RunConfig().set("train.lrr", "0.1")
    with pytest.raises(HqgnnError, match=r"unknown config key 'bogus'"):
        RunConfig().set("bogus", "1")
