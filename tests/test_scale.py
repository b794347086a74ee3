"""Scale ladder pieces (issue 27): streamed generator, chunked parser, vectorized writer, sampled evaluation."""

from __future__ import annotations

import dataclasses
import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hqgnn.data import lightgcn_format as lf
from hqgnn.data import load_lightgcn_dir, parse_file
from hqgnn.data.synth_scale import CHUNK_USERS, SynthSpec, generate, load_planted
from hqgnn.errors import DataError, HqgnnError
from hqgnn.eval import RankingEvaluator
from hqgnn.graph import csr_index_dtype


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != "synth.json"}


@pytest.fixture(scope="module")
def rung(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "r"
    # several generator chunks (CHUNK_USERS = 131072 users): 300k users, 3M interactions would be slow;
    # 140k users x 2 interactions each crosses one chunk boundary cheaply
    spec = SynthSpec(n_users=140_000, n_items=5_000, n_communities=10, mean_activity=3.0, seed=7)
    generate(out, spec, progress=False)
    return out


def test_generator_same_seed_same_bytes(tmp_path: Path) -> None:
    spec = SynthSpec.for_interactions(20_000, seed=3)
    generate(tmp_path / "a", spec, progress=False)
    generate(tmp_path / "b", dataclasses.replace(spec, n_users=3 * CHUNK_USERS // 2, mean_activity=2.0), progress=False)
    generate(tmp_path / "b2", dataclasses.replace(spec, n_users=3 * CHUNK_USERS // 2, mean_activity=2.0), progress=False, workers=2)
    assert _digest(tmp_path / "b") == _digest(tmp_path / "b2")  # worker processes change no byte
    generate(tmp_path / "b", spec, progress=False)
    generate(tmp_path / "c", SynthSpec.for_interactions(20_000, seed=4), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["train.txt"] != _digest(tmp_path / "c")["train.txt"]


def test_generated_rung_loads_consistently(rung: Path) -> None:
    import json

    summary = json.loads((rung / "synth.json").read_text())
    data = load_lightgcn_dir(rung)  # raises on a test item without train, a repeated pair, ...
    assert len(data.train) == summary["train"] and len(data.test) == summary["test"]
    assert data.n_users == 140_000
    per_user = np.bincount(data.train[:, 0], minlength=data.n_users)
    assert per_user.min() >= 1  # every user keeps a train item
    both = np.concatenate([data.train, data.test])
    assert len(np.unique(both[:, 0] * data.n_items + both[:, 1])) == len(both)  # no pair twice
    user_comm, item_comm = load_planted(rung)
    assert user_comm.shape == (140_000, 2) and item_comm.shape == (5_000,)
    # planted structure is visible: most train items lie in the user's two communities (90% target)
    ic = item_comm[data.train[:, 1]]
    uc = np.asarray(user_comm)[data.train[:, 0]]
    share = np.mean((ic == uc[:, 0]) | (ic == uc[:, 1]))
    assert share > 0.75


def test_generator_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(HqgnnError):
        SynthSpec.for_interactions(10)
    with pytest.raises(HqgnnError):
        generate(tmp_path / "x", SynthSpec(n_users=10, n_items=2, n_communities=1, mean_activity=3.0), progress=False)
    assert not (tmp_path / "x").exists()


def _reference_lines(pairs: np.ndarray, u0: int, u1: int) -> bytes:
    lines = [" ".join([str(u), *map(str, pairs[pairs[:, 0] == u, 1])]) for u in range(u0, u1)]
    return ("\n".join(lines) + "\n").encode()


def test_encode_lines_matches_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(0, 30))
        u0 = int(rng.integers(0, 2**40))
        u1 = u0 + int(rng.integers(1, 8))
        users = np.sort(rng.integers(u0, u1, n))
        items = rng.integers(0, 10 ** int(rng.integers(1, 18)), n)
        pairs = np.column_stack([users, items]).astype(np.int64).reshape(-1, 2)
        assert lf.encode_lines(pairs, u0, u1) == _reference_lines(pairs, u0, u1)


def test_chunked_parse_equals_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rung: Path) -> None:
    whole = parse_file(rung / "train.txt")
    monkeypatch.setattr(lf, "PARSE_CHUNK", 4096)  # hundreds of slices, cut at newlines
    sliced = parse_file(rung / "train.txt")
    for name in ("users", "user_lines", "pairs", "pair_lines"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(sliced, name))
    # errors in a late slice still name the right line
    lines = (rung / "train.txt").read_text().splitlines()
    lines[5000] = lines[5000] + " x7"
    bad = tmp_path / "train.txt"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r":5001: "):
        parse_file(bad)
    lines[5000] = lines[5000][:-3] + " " + lines[5000].split()[1]  # an item repeated within the line
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r":5001: "):
        parse_file(bad)


def test_parse_peak_memory_is_bounded_by_the_answer(rung: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak traced memory ~ file bytes + ~24 B per pair + one slice, not ~100 B per token (the unsliced parser)."""
    monkeypatch.setattr(lf, "PARSE_CHUNK", 1 << 16)
    path = rung / "train.txt"
    size = path.stat().st_size
    tracemalloc.start()
    parsed = parse_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_pairs = len(parsed.pairs)
    n_lines = len(parsed.users)
    answer = 24 * n_pairs + 16 * n_lines
    assert peak < size + 2.5 * answer + 64 * (1 << 16), (peak, size, answer)  # unsliced: ~5 x answer


def test_sampled_evaluation_is_the_full_evaluation_of_the_sample() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 300, 50
    truth = sp.random(n_users, n_items, density=0.05, format="csr", random_state=1)
    seen = sp.random(n_users, n_items, density=0.1, format="csr", random_state=2)
    seen = seen - seen.multiply(truth.astype(bool))
    seen.eliminate_zeros()
    ue, ie = torch.from_numpy(rng.normal(size=(n_users, 8))).float(), torch.from_numpy(rng.normal(size=(n_items, 8))).float()
    sampled = RankingEvaluator(truth, seen, (5,), max_users=40, seed=3)
    again = RankingEvaluator(truth, seen, (5,), max_users=40, seed=3)
    assert len(sampled.users) == 40 and torch.equal(sampled.users, again.users)
    rows = sampled.users.numpy()
    keep = sp.diags(np.isin(np.arange(n_users), rows).astype(np.float32))
    only = RankingEvaluator(keep @ truth, seen, (5,))  # full evaluation of exactly those users
    assert torch.equal(only.users, sampled.users)
    a, b = sampled.evaluate_embeddings(ue, ie), only.evaluate_embeddings(ue, ie)
    assert a == pytest.approx(b)
    assert len(RankingEvaluator(truth, seen, (5,), max_users=10**9).users) == int((np.diff(truth.indptr) > 0).sum())


def test_csr_index_dtype_switches_on_nodes_and_entries() -> None:
    assert csr_index_dtype(200_000_000, 12_000_000) == torch.int32  # the 100M rung fits int32
    assert csr_index_dtype(2**31, 10) == torch.int64
    assert csr_index_dtype(10, 2**31) == torch.int64  # node ids past int32 (1B+ users + items)


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from run_helpers import run_cli

    code, out, err = run_cli(["data", "synth", "--interactions", "5k", "--out", str(tmp_path / "s"), "--json"], capsys)
    assert code == 0, err
    assert (tmp_path / "s" / "train.txt").exists()
    code, _, err = run_cli(["data", "synth", "--interactions", "5X", "--out", str(tmp_path / "t")], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "5X" in errors[0] and "Traceback" not in err, err
    code, _, err = run_cli(["data", "synth", "--interactions", "10", "--out", str(tmp_path / "t")], capsys)
    assert code == 1 and err.startswith("error:") and not (tmp_path / "t").exists(), err
