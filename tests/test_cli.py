"""CLI smoke tests: train -> evaluate -> recommend -> export on the synthetic data, and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hqgnn.cli import main

FAST = ["--epochs", "2", "--eval-every", "1", "--dim", "16", "--device", "cpu", "-q",
        "--set", "data.synthetic_users=300", "--set", "data.synthetic_items=200"]


def run_cli(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    main(["train", "--out", str(out), *FAST])
    return out


def test_train_writes_run(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    assert "epochs = 2" in (trained_run / "config.toml").read_text()


def test_evaluate_json_matches_training_metrics(trained_run, capsys):
    code, out, _ = run_cli(["evaluate", str(trained_run), "--json", "--device", "cpu"], capsys)
    assert code == 0
    got = json.loads(out)
    want = json.loads((trained_run / "metrics.json").read_text())["test"]
    for key in ("recall@20", "ndcg@50"):
        assert got[key] == pytest.approx(want[key], abs=1e-9)


def test_recommend_and_export(trained_run, tmp_path, capsys):
    code, out, _ = run_cli(["recommend", str(trained_run), "--user", "3", "-k", "5", "--json"], capsys)
    assert code == 0
    rec = json.loads(out)
    assert rec["user"] == 3 and len(rec["items"]) == 5
    scores = [r["score"] for r in rec["items"]]
    assert scores == sorted(scores, reverse=True)
    code, _, _ = run_cli(["export", str(trained_run), "--out", str(tmp_path / "e.npz")], capsys)
    assert code == 0
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert z["user_emb"].shape[0] == len(z["user_ids"]) and z["item_emb"].shape[1] == 16
        top = np.argsort(-(z["user_emb"][3] @ z["item_emb"].T), kind="stable")
    seen_top = [int(z_item) for z_item in top[:50]]
    assert [r["item"] for r in rec["items"]][0] in seen_top


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--bits", "9"], "quant.bits must be in [0, 8], got 9"),
        (["train", "--estimator", "ste"], "needs quant.bits"),
        (["train", "--data", "/no/such/place"], "/no/such/place"),
        (["train", "--set", "model.nope=1"], "unknown setting"),
        (["evaluate", "/no/such/run"], "missing"),
    ],
)
def test_user_errors_are_one_line(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_recommend_unknown_user(trained_run, capsys):
    code, _, err = run_cli(["recommend", str(trained_run), "--user", "nobody"], capsys)
    assert code == 1 and "unknown user" in err


def test_console_script_help():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "hqgnn", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0
    for cmd in ("train", "evaluate", "recommend", "export", "data", "bench", "serve"):
        assert cmd in res.stdout
