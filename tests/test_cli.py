"""CLI smoke tests: train -> evaluate -> recommend -> export on the synthetic data, and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hqgnn.cli import main
from run_helpers import run_cli

FAST = ["--epochs", "2", "--eval-every", "1", "--dim", "16", "--device", "cpu", "-q",
        "--set", "data.synthetic_users=300", "--set", "data.synthetic_items=200"]




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
        (["train", "--set", "model.nope=1"], "unknown setting"),  # exit 2: a usage error
        (["evaluate", "/no/such/run"], "missing"),
        (["bench", "retrieval", "--query-bits", "4", "--value-dtype", "float64"], "--value-dtype must be"),
        (["bench", "retrieval", "--query-bits", "4", "--item-order", "random"], "--item-order must be"),
    ],
)
def test_user_errors_are_one_line(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == (2 if "--set" in args else 1)
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


# -- usage errors, help, run directories, loader counts -------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["train", "--epochs", "x"], "'--epochs'"),
        (["recommend"], "Missing argument 'RUN'"),
        (["recommend", "some/run"], "Missing option '--user'"),
        ([], "missing command"),
        (["data"], "missing command"),
    ],
)
def test_usage_errors_exit_2_with_one_error_line(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err and "typer._click" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def test_usage_error_in_a_subprocess_has_no_traceback():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "hqgnn", "train", "--bogus"], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_train_help_shows_brackets_and_real_defaults(capsys):
    from hqgnn.config import RunConfig

    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())  # undo the formatter's line wrapping
    assert "[data] [model] [quant] [train] [eval]" in text
    d = RunConfig()
    for flag, value in (("--epochs N", d.train.epochs), ("--dim D", d.model.dim), ("--layers K", d.model.layers),
                        ("--lr LR", f"{d.train.lr:g}"), ("--bits B", d.quant.bits),
                        ("--batch-size N", d.train.batch_size)):
        start = text.index(flag)
        assert f"[default: {value}]" in text[start:start + 160], flag
    for cmd in ("train", "evaluate", "recommend", "export", "serve", "data stats", "bench retrieval"):
        code, out, _ = run_cli([*cmd.split(), "--help"], capsys)
        assert code == 0 and "<" not in out and "{" not in out, out  # no <bool> / <path> / {run_dir} tags


def test_out_refuses_an_existing_run_unless_overwrite(trained_run, tmp_path, capsys):
    before = (trained_run / "metrics.json").read_bytes()
    code, _, err = run_cli(["train", "--out", str(trained_run), *FAST], capsys)
    assert code == 1 and "already holds a run" in err and "--overwrite" in err
    assert (trained_run / "metrics.json").read_bytes() == before
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(trained_run, copy)
    code, _, err = run_cli(["train", "--out", str(copy), "--overwrite", *FAST, "--seed", "7"], capsys)
    assert code == 0, err
    assert (copy / "metrics.json").read_bytes() != before
    assert "seed = 7" in (copy / "config.toml").read_text()
    assert not list(tmp_path.glob(".copy.*"))  # no partial / old directory left next to it


def test_resume_on_a_missing_directory_does_not_create_it(tmp_path, capsys):
    target = tmp_path / "nothing"
    code, _, err = run_cli(["train", "--out", str(target), "--resume", *FAST], capsys)
    assert code == 1 and "no such run directory" in err
    assert not target.exists()


def test_failed_run_leaves_no_run_directory(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n2,\n")
    target = tmp_path / "nested" / "run"
    code, _, err = run_cli(["train", "--out", str(target), "--data", str(bad), *FAST], capsys)
    assert code == 1 and "bad.csv:3: missing item id" in err
    assert not (tmp_path / "nested").exists()  # nor the folder created for it
    # a failed --overwrite keeps the old run as it was
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.toml").write_text("old run")
    code, _, _ = run_cli(["train", "--out", str(old), "--overwrite", "--data", str(bad), *FAST], capsys)
    assert code == 1 and (old / "config.toml").read_text() == "old run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "old"]


def test_loader_counts_in_metrics_and_printed_with_quiet(tmp_path, capsys):
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 60, 900), rng.integers(0, 40, 900)
    lines = ["user,item,rating"] + [f"u{u},i{i},{r}" for u, i, r in zip(users, items, rng.integers(1, 6, 900))]
    lines.insert(10, "")  # a blank line mid-file, and a trailing one
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n\n")
    n_dup = 900 - len(set(zip(users.tolist(), items.tolist())))
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--out", str(out), "--data", str(log), *FAST], capsys)
    assert code == 0, err
    counts = json.loads((out / "metrics.json").read_text())["data_counts"]
    assert counts["rows_read"] == 900 and counts["duplicates_removed"] == n_dup
    assert counts["blank_lines_skipped"] == 2 and counts["ignored_columns"] == ["rating"]
    assert counts["kcore_removed"] == 0 and "cold_users" in counts and "cold_items" in counts
    assert f"duplicates_removed {n_dup}" in err and "blank_lines_skipped 2" in err  # even with -q


def test_init_from_says_what_it_loaded(trained_run, tmp_path, capsys):
    code, _, err = run_cli(["train", "--out", str(tmp_path / "warm"), "--init-from", str(trained_run), *FAST], capsys)
    assert code == 0, err
    best = json.loads((trained_run / "metrics.json").read_text())["best_epoch"]
    line = " ".join(err.split())
    assert "init-from: loaded" in line and "model.safetensors" in line and f"epoch {best}" in line
    from hqgnn.run import load_run

    run = load_run(trained_run)
    assert f"({run.n_users + run.n_items}, 16)" in line  # one embedding row per user and item, dim 16


def test_data_stats_takes_columns_and_ignores_splits(tmp_path, capsys):
    log = tmp_path / "log.tsv"
    log.write_text("uid\tsku\tr\n1\ta\t2\n1\tb\t3\n\n2\ta\t1\n1\ta\t5\n")
    code, _, err = run_cli(["data", "stats", str(log), "--json"], capsys)
    assert code == 1 and "no column 'user'" in err
    base = ["data", "stats", str(log), "--json", "--set", "data.user_col=uid", "--set", "data.item_col=sku"]
    code, out, err = run_cli(base, capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["rows_read"] == 4 and stats["duplicates_removed"] == 1 and stats["blank_lines_skipped"] == 1
    assert stats["users"] == 2 and stats["items"] == 2 and stats["interactions"] == 3
    assert stats["interactions_per_user_max"] == 2 and stats["interactions_per_user_min"] == 1
    assert "train" not in stats and "val" not in stats
    code, out2, _ = run_cli([*base, "--set", "data.test_ratio=0.5", "--set", "data.seed=3"], capsys)
    assert json.loads(out2) == stats  # the split settings do not change the file's own counts


def test_every_imported_package_is_declared_in_pyproject():
    """A package imported by src/ but installed only as someone else's dependency breaks fresh installs (issue 10)."""
    import ast
    import importlib.metadata as md
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {norm(re.match(r"[A-Za-z0-9_.-]+", spec).group(0)) for spec in specs}
    modules = set()
    for path in (root / "src" / "hqgnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = sorted(m for m in modules if m not in sys.stdlib_module_names and m not in ("hqgnn", "__future__"))
    dists = md.packages_distributions()
    missing = [m for m in third_party if not ({norm(d) for d in dists.get(m, [m])} & declared)]
    assert "click" not in third_party  # typer 0.29 no longer installs it
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_failure_after_a_checkpoint_keeps_the_run_resumable(tmp_path):
    from hqgnn.config import RunConfig
    from hqgnn.train.pipeline import run_training

    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 300, 200
    cfg.model.dim, cfg.train.epochs, cfg.train.eval_every, cfg.train.device = 16, 3, 1, "cpu"
    out = tmp_path / "run"

    def crash(epoch):
        if epoch == 2:
            raise RuntimeError("lost the machine")

    with pytest.raises(RuntimeError):
        run_training(cfg, out, progress=False, on_epoch_end=crash)
    assert (out / "checkpoint.safetensors").exists() and not (out / "metrics.json").exists()
    metrics = run_training(cfg, out, resume=True, progress=False)
    assert metrics["epochs_run"] == 3 and (out / "metrics.json").exists()


def test_a_set_value_of_the_wrong_type_is_a_usage_error(tmp_path, capsys):
    """--set train.lr=abc and --set lr=0.1 exit 2 (usage), with one error line; a value out of range is 1."""
    for setting, needle in (("train.lr=abc", "expected float"), ("lr=0.1", "did you mean train.lr"),
                            ("train.refit=treu", "expected a boolean"), ("nosuch.field=1", "unknown config key")):
        code, _, err = run_cli(["train", "--out", str(tmp_path / "r"), "--set", setting], capsys)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert needle in err, err
    code, _, err = run_cli(["train", "--out", str(tmp_path / "r"), "--set", "train.lr=-1"], capsys)
    assert code == 1 and err.startswith("error:"), err
    assert not (tmp_path / "r").exists()


def test_a_busy_port_is_one_error_line(trained_run, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        code, _, err = run_cli(["serve", str(trained_run), "--port", str(port)], capsys)
    assert code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert f"127.0.0.1:{port}" in err and "another --port" in err
