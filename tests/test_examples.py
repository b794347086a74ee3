"""The scripts in examples/ run as a user runs them (a fresh Python process each) and print what they promise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC = Path(__file__).resolve().parents[1] / "src"


def run_example(name: str, out_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # this checkout's package first, as `pip install -e .` would give it (also when another hqgnn is installed)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), str(out_dir)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(
        ["dataframe_fit_recommend.py", "train_and_serve.py", "export_to_faiss.py"])


def test_dataframe_fit_recommend(tmp_path):
    proc = run_example("dataframe_fit_recommend.py", tmp_path)
    assert "the loaded model recommends the same items" in proc.stdout
    assert (tmp_path / "notebook-run" / "metrics.json").is_file()
    recs = [line for line in proc.stdout.splitlines() if line.startswith("user-")]
    assert len(recs) == 2 and all(line.count("sku-") == 5 for line in recs)


def test_train_and_serve(tmp_path):
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    proc = run_example("train_and_serve.py", tmp_path)
    assert "1-bit codes" in proc.stdout
    assert "unknown users: ['nobody']" in proc.stdout
    assert "unknown user -> 404" in proc.stdout


def test_export_to_faiss(tmp_path):
    pytest.importorskip("faiss")
    proc = run_example("export_to_faiss.py", tmp_path)
    assert "FAISS top-10 scores equal `hqgnn recommend --include-seen`" in proc.stdout
    assert (tmp_path / "items.dequantized_ip.faiss").is_file()
