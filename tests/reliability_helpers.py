"""Shared by the reliability tests and benchmarks/reliability.py: tiny runs, run-file mutations (the corruption
fuzzer's cases) and the oracle that says whether a damaged run was handled (one error line, or the right answer)."""

from __future__ import annotations

import json
import random
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hqgnn.config import RunConfig

RUN_FILES = ("config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "seen.npz",
             "curve.png", "manifest.json", "checkpoint.safetensors", "best.safetensors")


def tiny_config(seed: int = 2020, bits: int = 0, data_seed: int = 2020, **quant: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items, cfg.data.seed = 60, 40, data_seed
    cfg.model.dim, cfg.model.layers = 8, 1
    cfg.train.epochs, cfg.train.eval_every, cfg.train.batch_size, cfg.train.lr = 2, 1, 256, 5e-3
    cfg.train.device, cfg.train.seed = "cpu", seed
    if bits:
        cfg.quant.bits, cfg.quant.estimator = bits, "ste"
    for k, v in quant.items():
        setattr(cfg.quant, k, v)
    return cfg.validate()


# -- mutations ------------------------------------------------------------------------------------
@dataclass
class Case:
    """One damaged copy of a base run: ``apply(run_dir, other_dir)`` damages ``run_dir`` in place."""

    name: str
    base: str  # which base run it damages
    apply: Callable[[Path, Path], None]
    old_format: bool = False  # the manifest is removed first (a run written before manifests)


def _truncate(name: str, frac: float) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        p = d / name
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * frac)] if frac < 1 else data[:-1])
    return f


def _flip(name: str, seed: int, n_bits: int) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        p = d / name
        data = bytearray(p.read_bytes())
        rng = random.Random(seed)
        for _ in range(n_bits):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
    return f


def _swap(name: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        shutil.copyfile(other / name, d / name)
    return f


def _delete(name: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        (d / name).unlink()
    return f


def _npz_without(name: str, key: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        with np.load(d / name, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != key}
        with open(d / name, "wb") as fh:
            np.savez(fh, **arrays)
    return f


def _npz_edit(name: str, edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        with np.load(d / name, allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        edit(arrays)
        with open(d / name, "wb") as fh:
            np.savez(fh, **arrays)
    return f


def _tables_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        from safetensors.torch import load_file, save_file

        t = load_file(str(d / "tables.safetensors"))
        edit(t)
        save_file({k: v.contiguous() for k, v in t.items()}, str(d / "tables.safetensors"))
    return f


def _toml_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        import tomli_w

        raw = tomllib.loads((d / "config.toml").read_text())
        edit(raw)
        (d / "config.toml").write_text(tomli_w.dumps(raw))
    return f


def _json_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        obj = json.loads((d / name).read_text())
        edit(obj)
        (d / name).write_text(json.dumps(obj))
    return f


def structural_edits(quantized: bool) -> list[tuple[str, Callable[[Path, Path], None]]]:
    """Deleted sections and inconsistent but well-formed files: what the cross-file checks must catch."""
    import torch

    edits: list[tuple[str, Callable[[Path, Path], None]]] = [
        ("ids: user_ids missing", _npz_without("ids.npz", "user_ids")),
        ("ids: item_ids missing", _npz_without("ids.npz", "item_ids")),
        ("ids: short user map", _npz_edit("ids.npz", lambda a: a.update(user_ids=a["user_ids"][:-3]))),
        ("ids: short item map", _npz_edit("ids.npz", lambda a: a.update(item_ids=a["item_ids"][:-1]))),
        ("ids: repeated user id", _npz_edit("ids.npz", lambda a: a["user_ids"].__setitem__(1, a["user_ids"][0]))),
        ("ids: 2-d item ids", _npz_edit("ids.npz", lambda a: a.update(item_ids=a["item_ids"].reshape(1, -1)))),
        ("ids: float ids", _npz_edit("ids.npz", lambda a: a.update(user_ids=a["user_ids"].astype(np.float64)))),
        ("seen: indices missing", _npz_without("seen.npz", "indices")),
        ("seen: item out of range", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(0, 10**6))),
        ("seen: negative item", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(0, -1))),
        ("seen: unsorted row", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(
            slice(a["indptr"][0], a["indptr"][0] + 2), a["indices"][a["indptr"][0]: a["indptr"][0] + 2][::-1].copy()))),
        ("seen: short indptr", _npz_edit("seen.npz", lambda a: a.update(indptr=a["indptr"][:-2]))),
        ("seen: wrong shape", _npz_edit("seen.npz", lambda a: a.update(shape=a["shape"] + 1))),
        ("seen: decreasing indptr", _npz_edit("seen.npz", lambda a: a["indptr"].__setitem__(2, a["indptr"][1] - 1))),
        ("tables: item_emb missing", _tables_edit(lambda t: t.pop("item_emb"))),
        ("tables: user_emb short", _tables_edit(lambda t: t.update(user_emb=t["user_emb"][:-1]))),
        ("tables: item_emb short", _tables_edit(lambda t: t.update(item_emb=t["item_emb"][:-2]))),
        ("tables: NaN in user_emb", _tables_edit(lambda t: t["user_emb"].__setitem__((0, 0), float("nan")))),
        ("tables: inf in item_emb", _tables_edit(lambda t: t["item_emb"].__setitem__((1, 0), float("inf")))),
        ("tables: narrower items", _tables_edit(lambda t: t.update(item_emb=t["item_emb"][:, :-1].contiguous()))),
        ("config: [model] deleted", _toml_edit(lambda c: c.pop("model"))),
        ("config: bad value", _toml_edit(lambda c: c["train"].update(lr=-1.0))),
        ("config: unknown key", _toml_edit(lambda c: c["train"].update(learning_rate=1.0))),
        ("metrics: not an object", lambda d, o: (d / "metrics.json").write_text("[1, 2]")),
        ("metrics: invalid JSON", lambda d, o: (d / "metrics.json").write_text('{"test": ')),
    ]
    if quantized:
        edits += [
            ("config: [quant] deleted (served as float?)", _toml_edit(lambda c: c.pop("quant"))),
            ("config: bits changed", _toml_edit(lambda c: c["quant"].update(bits=4))),
            ("config: float queries claimed", _toml_edit(lambda c: c["quant"].update(user_bits=0))),
            ("tables: item_codes missing", _tables_edit(lambda t: t.pop("item_codes"))),
            ("tables: user_scale missing", _tables_edit(lambda t: t.pop("user_scale"))),
            ("tables: item_codes short", _tables_edit(lambda t: t.update(item_codes=t["item_codes"][:-1]))),
            ("tables: codes out of range", _tables_edit(lambda t: t["item_codes"].__setitem__((0, 0), 100))),
            ("tables: float codes", _tables_edit(lambda t: t.update(item_codes=t["item_codes"].float()))),
            ("tables: NaN scale", _tables_edit(lambda t: t["item_scale"].view(-1).__setitem__(0, float("nan")))),
            ("tables: extra user_query", _tables_edit(lambda t: t.update(user_query=t["user_emb"].clone()))),
        ]
    else:
        edits += [
            ("config: quant bits claimed", _toml_edit(lambda c: c["quant"].update(bits=1, estimator="ste"))),
            ("tables: stray item_codes", _tables_edit(lambda t: t.update(
                item_codes=torch.ones_like(t["item_emb"], dtype=torch.int8)))),
        ]
    return edits


def manifest_edits() -> list[tuple[str, Callable[[Path, Path], None]]]:
    def files_pop(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["files"].pop(name)

    return [
        ("manifest: invalid JSON", lambda d, o: (d / "manifest.json").write_text("{")),
        ("manifest: empty", lambda d, o: (d / "manifest.json").write_text("")),
        ("manifest: a list", lambda d, o: (d / "manifest.json").write_text("[]")),
        ("manifest: newer version", _json_edit("manifest.json", lambda m: m.update(format_version=99))),
        ("manifest: version a string", _json_edit("manifest.json", lambda m: m.update(format_version="1"))),
        ("manifest: files deleted", _json_edit("manifest.json", lambda m: m.pop("files"))),
        ("manifest: ids entry deleted", _json_edit("manifest.json", files_pop("ids.npz"))),
        ("manifest: seen entry deleted", _json_edit("manifest.json", files_pop("seen.npz"))),
        ("manifest: code format deleted", _json_edit("manifest.json", lambda m: m.pop("code_format"))),
        ("manifest: tables deleted", _json_edit("manifest.json", lambda m: m.pop("tables"))),
        ("manifest: wrong user count", _json_edit("manifest.json", lambda m: m.update(users=m["users"] + 1))),
        ("manifest: wrong size", _json_edit("manifest.json", lambda m: m["files"]["ids.npz"].update(size=1))),
        ("manifest: wrong format name", _json_edit("manifest.json", lambda m: m.update(format="other"))),
        ("manifest: code format changed", _json_edit("manifest.json", lambda m: m["code_format"].update(bits=3))),
    ]


def build_cases(bases: dict[str, str], n_flips: int, seed: int = 0) -> list[Case]:
    """Every mutation of every base run: ``bases`` maps a base name to its "other run" (swaps come from it).

    Per base and file: truncations (to 0, half, all but one byte), ``n_flips`` single-bit flips and one
    8-bit flip at seeded positions, a swap with the other run's file, a deletion; then the manifest and
    structural edits, the latter also on the old format (no manifest) where the cross-file checks alone
    must catch them.
    """
    rng = random.Random(seed)
    cases: list[Case] = []
    for base in bases:
        quantized = base.startswith("q")
        for name in RUN_FILES:
            for frac in (0.0, 0.5, 1.0):
                cases.append(Case(f"{base}/{name}: truncated to {'all but 1 byte' if frac == 1 else frac}", base,
                                  _truncate(name, frac)))
            for i in range(n_flips):
                cases.append(Case(f"{base}/{name}: bit flip #{i}", base, _flip(name, rng.randrange(1 << 30), 1)))
            cases.append(Case(f"{base}/{name}: 8 bit flips", base, _flip(name, rng.randrange(1 << 30), 8)))
            cases.append(Case(f"{base}/{name}: swapped with the other run's", base, _swap(name)))
            cases.append(Case(f"{base}/{name}: deleted", base, _delete(name)))
        for label, fn in manifest_edits():
            cases.append(Case(f"{base}/{label}", base, fn))
        for label, fn in structural_edits(quantized):
            cases.append(Case(f"{base}/{label}", base, fn))
            cases.append(Case(f"{base}/old format, {label}", base, fn, old_format=True))
    return cases


def make_old_format(d: Path) -> None:
    """A run as written before manifests: no manifest.json, no run_format in metrics.json."""
    (d / "manifest.json").unlink(missing_ok=True)
    metrics = json.loads((d / "metrics.json").read_text())
    metrics.pop("run_format", None)
    (d / "metrics.json").write_text(json.dumps(metrics))


def answer_of(run_dir: Path, users: int = 5, k: int = 5) -> list[Any]:
    """What the run serves: top-k (item id, score) of its first users, through the serving Recommender."""
    from hqgnn.recommender import Recommender
    from hqgnn.run import load_run

    run = load_run(run_dir)
    rec = Recommender(run, renumber_items=True)
    scores, items = rec.recommend(np.arange(min(users, run.n_users)), k)
    ids = rec.run.item_ids
    return [[(ids[i].item(), float(s)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, items)]


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text and bool(text.strip())


def summarize(outcomes: list[str]) -> dict[str, int]:
    return {"tried": len(outcomes), "refused_one_line": outcomes.count("error"),
            "correct_answer": outcomes.count("correct"), "lost": sum(o not in ("error", "correct") for o in outcomes)}

