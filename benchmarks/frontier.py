"""The quality-per-byte frontier: float teacher, post-hoc compression of it, and quantization-aware codes.

One command per dataset, on one GPU; every row goes through the same exact evaluator (full ranking,
train + validation items masked) and carries the item and user bytes as served:

    python benchmarks/frontier.py --data gowalla --data-dir DIR --work /tmp/fr --deadline 560

Phases (all under one wall-clock deadline, each phase's budget derived from what is left):
1. float teachers at every width the QAT configurations need (d = 64 is the "float" row);
2. post-hoc baselines on every teacher (benchmarks/posthoc.py), on the CPU cores while phase 3 runs;
3. QAT configurations, warm-started from the teacher of their width, seed 0, all concurrently;
4. selection on VALIDATION Recall@20: the best configuration at each item-byte budget, plus the STE /
   GSTE variants of the best 1-bit configuration, rerun with seeds 1 and 2.
Rows go to benchmarks/results/frontier_<dataset>.json (and $OUT when set), after every phase.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METRICS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
BUDGETS = (8, 16, 36)  # item bytes; a row counts for every budget at or above its bytes

# name -> (code dim, bits, estimator, overrides). Overrides are quant.* / train.* fields, plus TEACHER: the
# width of the float teacher to warm-start from (PCA-projected, train.init_projection=pca) and distil from,
# when it is not the code's own (issue 28: one wide, strong teacher for every budget).
ASYM = {"quant.user_bits": 0}
CENTER_ROT = {"quant.center": True, "quant.rotation": "itq"}
FP16 = {"quant.scale_dtype": "float16"}
QAT: dict[str, tuple[int, int, str, dict[str, Any]]] = {
    # 8 B per item: 64 sign bits, one scale per table
    "b1_d64_tensor_asym_cr": (64, 1, "ste", {**ASYM, **CENTER_ROT, "quant.scale": "tensor"}),
    "b1_d64_tensor_asym_cr_kd": (64, 1, "ste", {**ASYM, **CENTER_ROT, "quant.scale": "tensor", "quant.distill": "score"}),
    "b1_d64_tensor_asym_cr_kd_gste_d1": (64, 1, "gste", {**ASYM, **CENTER_ROT, "quant.scale": "tensor",
                                                         "quant.distill": "score", "quant.delta": 1.0}),
    "b1_d64_tensor_asym_cr_rkd": (64, 1, "ste", {**ASYM, **CENTER_ROT, "quant.scale": "tensor", "quant.distill": "rank"}),
    # 8 B the other way: 48 sign bits + a float16 row scale (a d = 48 teacher)
    "b1_d48_asym_cr_kd": (48, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score"}),
    "b1_d48_asym_cr_rkd": (48, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "rank"}),
    "b1_d48_asym_cr_kd_gste_d1": (48, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score",
                                                  "quant.delta": 1.0}),
    "b1_d48_asym_cr_rkd_gste_d1": (48, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "rank",
                                                   "quant.delta": 1.0}),
    # 10-12 B: 64 sign bits + a row scale
    "b1_d64_sym": (64, 1, "ste", {}),  # the original HQ-GNN format (both sides 1 bit)
    "b1_d64_asym": (64, 1, "ste", {**ASYM, **FP16}),
    "b1_d64_asym_cr": (64, 1, "ste", {**ASYM, **CENTER_ROT, **FP16}),
    "b1_d64_asym_cr_lr2": (64, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "train.lr": 2e-3}),
    "b1_d64_asym_cr_kd": (64, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score"}),
    "b1_d64_asym_cr_rkd": (64, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "rank"}),
    "b1_d64_asym_cr_gste": (64, 1, "gste", {**ASYM, **CENTER_ROT, **FP16}),
    "b1_d64_asym_cr_gste_d1": (64, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.delta": 1.0}),
    "b1_d64_q4_cr": (64, 1, "ste", {"quant.user_bits": 4, **CENTER_ROT, **FP16}),  # 4-bit queries (bit planes)
    # 16 B: wider sign codes (112 bits + fp16 scale)
    "b1_d112_asym_cr": (112, 1, "ste", {**ASYM, **CENTER_ROT, **FP16}),
    "b1_d112_asym_cr_kd": (112, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score"}),
    "b1_d112_asym_cr_kd_gste_d1": (112, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score",
                                                   "quant.delta": 1.0}),
    # 30-36 B: multi-bit codes
    "b2_d112_asym_cr": (112, 2, "ste", {**ASYM, **CENTER_ROT, **FP16}),
    "b4_d64_asym_c": (64, 4, "ste", {**ASYM, "quant.center": True, **FP16}),
    "b4_d64_sym": (64, 4, "ste", {}),
    # BiGeaR-style: all 4 layers coded (256 sign bits + fp16 scale = 34 B), against b4_d64 at the same bytes
    "b1_d64_layers_asym_cr_kd": (64, 1, "ste", {**ASYM, **CENTER_ROT, **FP16, "quant.layerwise": True,
                                                "quant.distill": "score"}),
    # one wide teacher (d = 256) for every budget: projected warm start + distillation from it
    "b1_d48_w256_asym_cr_kd_gste_d1": (48, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score",
                                                       "quant.delta": 1.0, "TEACHER": 256}),
    "b1_d112_w256_asym_cr_kd_gste_d1": (112, 1, "gste", {**ASYM, **CENTER_ROT, **FP16, "quant.distill": "score",
                                                         "quant.delta": 1.0, "TEACHER": 256}),
    "b4_d64_w256_asym_c_kd": (64, 4, "ste", {**ASYM, "quant.center": True, **FP16, "quant.distill": "score",
                                             "TEACHER": 256}),
}


def teacher_dim(name: str) -> int:
    """The width of the float teacher configuration ``name`` starts from (its own code width by default)."""
    dim, _, _, over = QAT[name]
    return int(over.get("TEACHER", dim))


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "hqgnn", "train", "-q", *args], stdout=fh, stderr=subprocess.STDOUT)


def _sets(overrides: dict[str, Any]) -> list[str]:
    out = []
    for key, value in overrides.items():
        if key == "TEACHER":  # not a config field: the teacher's width (teacher_dim)
            continue
        out += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return out


class Frontier:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.time()
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.common = ["--data", args.data, "--data-dir", args.data_dir, "--batch-size", str(args.batch_size),
                       "--patience", "0", "--set", "train.sampling=user", "--set", f"data.val_ratio={args.val_ratio}",
                       "--device", args.device]
        self.teacher_args: list[str] = []
        if args.teacher_config:
            # the teacher's recipe from a TOML file (configs/lightgcn_<data>.toml: the float rows of BENCHMARKS
            # section 1); its [data] fields go to every QAT run as well, so the QAT runs are selected on the
            # validation split the teacher never trained on. Never its refit: that trains on validation.
            import tomllib

            data_fields = tomllib.loads(Path(args.teacher_config).read_text()).get("data", {})
            self.common += _sets({f"data.{k}": v for k, v in data_fields.items()})
            self.teacher_args = ["--data", args.data, "--data-dir", args.data_dir, "--device", args.device,
                                 "--config", args.teacher_config, "--set", "train.refit=false"]
        for item in args.set:
            self.common += ["--set", item]
            self.teacher_args += ["--set", item]

    def left(self) -> float:
        return self.args.deadline - (time.time() - self.t0)

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {msg}", flush=True)

    # ------------------------------------------------------------------ rows
    def add(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            self.rows += rows
            self.save()

    def save(self) -> None:
        text = json.dumps(self.rows, indent=1) + "\n"
        paths = [Path(self.args.results)]
        if os.environ.get("OUT"):
            paths.append(Path(os.environ["OUT"]) / f"frontier_{self.args.data}.json")
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def run_row(self, run_dir: Path, method: str, family: str, seed: int, extra: dict[str, Any]) -> dict[str, Any] | None:
        path = run_dir / "metrics.json"
        if not path.exists():
            self.log(f"{method}: no metrics (see {run_dir}.log)\n" + Path(f"{run_dir}.log").read_text()[-1500:])
            return None
        m = json.loads(path.read_text())
        return {"dataset": self.args.data, "method": method, "family": family,
                "item_bytes": m["memory"]["bytes_per_item"], "user_bytes": m["memory"]["bytes_per_user"],
                **{k: m["test"][k] for k in METRICS}, "val_recall@20": m["val"].get("recall@20"),
                "train_seconds": m["train_seconds"], "device": m["device"], "seed": seed,
                "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"], "call": self.args.tag, **extra}

    # ------------------------------------------------------------------ phases
    def teachers(self, dims: list[int]) -> dict[int, Path]:
        budget = self.args.teacher_seconds
        self.log(f"teachers d={dims}, {budget:.0f}s each, concurrently")
        procs = {}
        for d in dims:
            out = self.work / f"teacher_d{d}"
            if self.teacher_args:
                recipe = [*self.teacher_args, "--dim", str(d), "--out", str(out)]
            else:
                recipe = [*self.common, "--dim", str(d), "--lr", str(self.args.teacher_lr), "--out", str(out),
                          "--epochs", "100000", "--eval-every", "20"]
            procs[d] = (_launch([*recipe, "--set", f"train.max_seconds={budget}"], self.work / f"teacher_d{d}.log"), out)
        rows = []
        for d, (p, out) in procs.items():
            p.wait()
            row = self.run_row(out, f"float32_d{d}", "float" if d == self.args.float_dim else "float_wide", 0,
                               {"teacher_dim": d, "concurrent_runs": len(dims)})
            if row:
                rows.append(row)
        self.add(rows)
        return {d: out for d, (_, out) in procs.items()}

    def posthoc(self, teachers: dict[int, Path]) -> threading.Thread:
        def work() -> None:
            try:
                sys.path.insert(0, str(HERE))
                import faiss
                import posthoc
                import torch

                from hqgnn.data import load_dataset
                from hqgnn.eval import RankingEvaluator
                from hqgnn.run import load_run
                from hqgnn.train.pipeline import device_name

                faiss.omp_set_num_threads(self.args.faiss_threads)  # leave cores to the training processes
                dev = torch.device(self.args.device if self.args.device != "auto" else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
                wanted = self.args.posthoc.split(",") if self.args.posthoc else [
                    m for m in posthoc.DEFAULT_METHODS if m != "float32"]  # the teacher rows are the float rows
                for d, run_dir in teachers.items():
                    run = load_run(run_dir)
                    data = load_dataset(run.config.data)
                    hooks = posthoc.evaluator_hooks(RankingEvaluator(data.matrix(data.test), run.seen, (20, 50), dev))
                    for method in wanted:
                        split = re.fullmatch(r"o?pq(\d+).*", method)
                        if split and d % int(split.group(1)):
                            continue  # PQ needs M | d (d = 112 has no 32-way split)
                        # one method at a time, so every finished baseline is saved even if the deadline cuts the rest
                        try:
                            rows = posthoc.posthoc_rows(run.tables["user_emb"], run.tables["item_emb"],
                                                        hooks["evaluate"], data.name, device_name(dev), seed=0,
                                                        methods=[method], evaluate_ranking=hooks["evaluate_ranking"],
                                                        seen=hooks["seen"], log=self.log)
                        except Exception as exc:  # one failed baseline (e.g. too few items for k-means) is logged
                            self.log(f"post-hoc {method} on d={d} failed: {exc}")
                            continue
                        for r in rows:  # the dataset as every other row names it (--data), not the loader's name
                            r.update(teacher_dim=d, call=self.args.tag, dataset=self.args.data, **teacher_fit(run_dir))
                        self.add(rows)
            except Exception as exc:  # the QAT phase goes on; the failure is in the log and the output
                import traceback

                self.log(f"post-hoc failed: {exc}\n{traceback.format_exc()}")

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread

    def qat(self, names: list[str], seeds: list[int], teachers: dict[int, Path], budget: float, phase: str) -> None:
        self.log(f"QAT {phase}: {len(names)} configs x seeds {seeds}, {self.args.qat_epochs} epochs, cap {budget:.0f}s")
        procs = {}
        limit = self.args.qat_parallel or len(names) * len(seeds)  # runs at once (a small CPU: 1)
        for name in names:
            dim, bits, est, over = QAT[name]
            for seed in seeds:
                while sum(p.poll() is None for p, _ in procs.values()) >= limit:
                    time.sleep(1.0)
                out = self.work / f"{name}_s{seed}"
                tdim = teacher_dim(name)
                wide = ["--set", "train.init_projection=pca"] if tdim != dim else []
                args = [*self.common, *wide, "--dim", str(dim), "--lr", str(self.args.qat_lr), "--init-from", str(teachers[tdim]),
                        "--out", str(out), "--epochs", str(self.args.qat_epochs), "--eval-every",
                        str(self.args.qat_eval_every), "--bits", str(bits), "--estimator", est,
                        "--set", f"train.seed={seed}", "--set", f"train.max_seconds={budget}", *_sets(over)]
                procs[(name, seed)] = (_launch(args, Path(f"{out}.log")), out)
        rows = []
        for (name, seed), (p, out) in procs.items():
            p.wait()
            dim, bits, est, over = QAT[name]
            tdim = teacher_dim(name)
            row = self.run_row(out, name, "qat", seed, {"teacher_dim": tdim, "code_dim": dim, "bits": bits,
                                                        "estimator": est, "config": over, "phase": phase,
                                                        "concurrent_runs": len(procs), **teacher_fit(teachers[tdim])})
            if row:
                rows.append(row)
        self.add(rows)

    def select(self) -> list[str]:
        """Best configuration per budget and the STE/GSTE variants of the best 1-bit one, by VALIDATION recall."""
        qat = [r for r in self.rows if r["family"] == "qat" and r["seed"] == 0 and r["val_recall@20"] is not None]
        chosen: list[str] = []
        for budget in BUDGETS:
            fits = [r for r in qat if r["item_bytes"] <= budget]
            if fits:
                best = max(fits, key=lambda r: r["val_recall@20"])
                self.log(f"budget {budget} B: {best['method']} (val {best['val_recall@20']:.4f})")
                chosen.append(best["method"])
        one_bit = [r for r in qat if r["bits"] == 1 and not r["method"].endswith(("gste", "gste_d1"))]
        if one_bit:
            base = max(one_bit, key=lambda r: r["val_recall@20"])["method"]
            for variant in (base, base + "_gste", base + "_gste_d1"):
                if variant not in QAT:  # derive the GSTE variants of the chosen STE configuration
                    dim, bits, _, over = QAT[base]
                    QAT[variant] = (dim, bits, "gste", {**over, **({"quant.delta": 1.0} if variant.endswith("_d1") else {})})
                chosen.append(variant)
        return list(dict.fromkeys(chosen))

    def main(self) -> None:
        names = self.args.configs.split(",") if self.args.configs else list(QAT)
        dims = sorted({self.args.float_dim} | {teacher_dim(n) for n in names})
        teachers = self.teachers(dims)
        ph = self.posthoc(teachers)
        if self.args.fixed:
            # configurations chosen earlier on validation: straight to three seeds each
            seeds = [int(x) for x in self.args.seeds.split(",")]
            self.qat(names, seeds, teachers, max(30.0, self.left() - 30), "fixed")
            ph.join(timeout=max(1.0, self.left()))
            self.save()
            self.log(f"done: {len(self.rows)} rows")
            return
        # explore: seed 0 of every configuration; the reruns get what is left after it
        explore_cap = max(30.0, (self.left() - 60) * self.args.explore_share)
        self.qat(names, [0], teachers, explore_cap, "explore")
        chosen = self.select()
        missing = [n for n in chosen if not any(r["method"] == n and r["seed"] == 0 for r in self.rows)]
        if missing:  # GSTE variants not explored yet run with all three seeds
            self.qat(missing, [0, 1, 2], teachers, max(30.0, (self.left() - 40) / 2), "seeds")
        self.qat([n for n in chosen if n not in missing], [1, 2], teachers, max(30.0, self.left() - 30), "seeds")
        ph.join(timeout=max(1.0, self.left()))
        self.save()
        self.log(f"done: {len(self.rows)} rows")


CONVERGED_FRACTION = 0.8  # a teacher has converged when its best validation epoch is at most this share of its run


def teacher_fit(run_dir: Path) -> dict[str, Any]:
    """How far the teacher at ``run_dir`` had converged, for every row compressed or distilled from it (issue 28's
    fair budgets: a compressor of an under-trained teacher must not win by the teacher's missing epochs): its best
    validation epoch, the epochs it ran, and ``teacher_converged`` = best epoch <= CONVERGED_FRACTION x epochs run."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {"teacher_converged": None}
    m = json.loads(path.read_text())
    best, ran = m.get("best_epoch"), m.get("epochs_run")
    ok = None if best is None or not ran else bool(best <= CONVERGED_FRACTION * ran)
    return {"teacher_best_epoch": best, "teacher_epochs_run": ran, "teacher_converged": ok}


def select_rows(rows: list[dict[str, Any]], dataset: str, call: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``dataset`` (and of ``call``). Rows of that call filed under another dataset name are an
    error, never silently left out of a plot or summary (post-hoc rows once named the loader's dataset)."""
    of_call = [r for r in rows if call is None or r.get("call", "") == call]
    others = sorted({str(r["dataset"]) for r in of_call} - {dataset})
    if others and call is not None:
        raise ValueError(f"rows of call {call!r} name other datasets than {dataset!r}: {', '.join(others)}")
    return [r for r in of_call if r["dataset"] == dataset]


def plot(rows: list[dict[str, Any]], dataset: str, path: Path, call: str | None = None) -> None:
    """Recall@20 against item bytes (log x), seeds averaged: every row as a dot, each family's Pareto
    frontier as a line, frontier points labelled. ``call``: only the rows of that call (one teacher)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = select_rows(rows, dataset, call)
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"float": ("black", "*"), "float_wide": ("gray", "*"), "posthoc": ("tab:blue", "o"), "qat": ("tab:red", "s")}
    for family, (color, marker) in styles.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r["family"] == family:
                groups.setdefault(f"{r['method']} (d{r.get('teacher_dim', '?')})", []).append(r)
        pts = sorted((rs[0]["item_bytes"], float(np.mean([r["recall@20"] for r in rs])), label)
                     for label, rs in groups.items())
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, s=30, alpha=0.45)
        front, best = [], -1.0
        for x, y, label in pts:  # sorted by bytes: a point is on the frontier if it beats every smaller one
            if y > best:
                front.append((x, y, label))
                best = y
        if family.startswith("float"):  # the float models: reference lines across the whole plot
            for x, y, label in pts:
                ax.axhline(y, color=color, ls=":", lw=1)
                ax.annotate(f"{label} {y:.4f}", (1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                            textcoords="offset points", ha="right", fontsize=7, color=color)
            continue
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, marker=marker, drawstyle="steps-post",
                label=family)
        for j, (x, y, label) in enumerate(front):  # alternate above / below so neighbours do not overlap
            ax.annotate(label, (x, y), fontsize=6, xytext=(4, (8 if j % 2 else -11) * (1 if family == "qat" else -1)),
                        textcoords="offset points", color=color,
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    for budget in (8, 16, 32):  # the byte budgets the frontier is judged at
        ax.axvline(budget, color="lightgray", lw=0.8, zorder=0)
        ax.annotate(f"{budget} B", (budget, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3),
                    textcoords="offset points", fontsize=7, color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("item bytes as stored (log scale)")
    ax.set_ylabel("test Recall@20 (mean over seeds)")
    ax.set_title(f"{dataset}: quality per byte" + (f" ({call})" if call else ""))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(rows: list[dict[str, Any]], dataset: str, call: str) -> str:
    """Markdown table of one call's rows: every method (seeds: mean +- std), item / user bytes, recovery
    against that call's d = 64 float row; best post-hoc and best QAT row at each budget marked."""
    import numpy as np

    rows = select_rows(rows, dataset, call)
    floats = [r for r in rows if r["family"] == "float"]
    if not floats:
        return f"(no float row for {dataset} {call})"
    base = floats[0]["recall@20"]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r.get("teacher_dim", 0)), []).append(r)
    stats = []
    for (method, dim), rs in groups.items():
        rec = np.array([r["recall@20"] for r in rs])
        stats.append({"method": method, "dim": dim, "family": rs[0]["family"], "item_bytes": rs[0]["item_bytes"],
                      "user_bytes": rs[0]["user_bytes"], "n": len(rs), "r20": rec.mean(), "r20_std": rec.std(),
                      **{k: float(np.mean([r[k] for r in rs])) for k in ("ndcg@20", "recall@50", "ndcg@50")},
                      "val": float(np.mean([r.get("val_recall@20") or 0 for r in rs])),
                      "unconverged": any(r.get("teacher_converged") is False for r in rs)})
    best = {}
    for budget in BUDGETS:
        for fam in ("posthoc", "qat"):
            fits = [x for x in stats if x["family"] == fam and x["item_bytes"] <= budget]
            if fam == "qat":  # the QAT row of a budget is chosen on validation, as the harness does
                fits = [x for x in fits if x["n"] == 3] or fits
                pick = max(fits, key=lambda x: x["val"]) if fits else None
            else:
                pick = max(fits, key=lambda x: x["r20"]) if fits else None
            if pick:
                best.setdefault((pick["method"], pick["dim"]), []).append(f"{fam} <= {budget} B")
    out = ["| method | teacher d | item B | user B | seeds | Recall@20 | NDCG@20 | Recall@50 | NDCG@50 | recovery | best at |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in sorted(stats, key=lambda x: (x["item_bytes"], x["family"], -x["r20"])):
        r20 = f"{x['r20']:.4f}" + (f" ± {x['r20_std']:.4f}" if x["n"] > 1 else "")
        out.append(f"| {x['method']}{' (teacher not converged)' if x['unconverged'] else ''} | {x['dim']} | {x['item_bytes']:g} | {x['user_bytes']:g} | {x['n']} | {r20} | "
                   f"{x['ndcg@20']:.4f} | {x['recall@50']:.4f} | {x['ndcg@50']:.4f} | {x['r20'] / base:.3f} | "
                   f"{', '.join(best.get((x['method'], x['dim']), []))} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="gowalla")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--deadline", type=float, default=560, help="wall-clock seconds for the whole command")
    ap.add_argument("--teacher-seconds", type=float, default=150)
    ap.add_argument("--teacher-lr", type=float, default=5e-3)
    ap.add_argument("--teacher-config", default="", help="TOML recipe of the teachers (e.g. configs/lightgcn_yelp2018.toml; "
                    "its [data] fields apply to the QAT runs too; --teacher-seconds still sets the budget)")
    ap.add_argument("--float-dim", type=int, default=64)
    ap.add_argument("--qat-epochs", type=int, default=40)
    ap.add_argument("--qat-lr", type=float, default=5e-3)
    ap.add_argument("--faiss-threads", type=int, default=8)
    ap.add_argument("--explore-share", type=float, default=0.55, help="share of the time left after the teachers")
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--val-ratio", type=float, default=0.05)
    ap.add_argument("--configs", default="", help="comma list of QAT configuration names (default: all)")
    ap.add_argument("--fixed", action="store_true", help="run --configs with --seeds (no exploration)")
    ap.add_argument("--seeds", default="0,1,2", help="--fixed: comma list of seeds")
    ap.add_argument("--qat-parallel", type=int, default=0, help="QAT runs at once (0 = all)")
    ap.add_argument("--qat-eval-every", type=int, default=5)
    ap.add_argument("--posthoc", default="", help="comma list of post-hoc methods (default: all)")
    ap.add_argument("--tag", default="", help="label stored in every row (which call produced it)")
    ap.add_argument("--set", action="append", default=[], help="extra section.field=value for every run")
    ap.add_argument("--results", default="")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the plot from --results")
    ap.add_argument("--plot-call", default=None, help="plot only the rows of this call (one teacher)")
    ap.add_argument("--summary", default="", help="print the markdown table of this call's rows and exit")
    args = ap.parse_args()
    args.results = args.results or str(HERE / "results" / f"frontier_{args.data}.json")
    if args.summary:
        print(summary(json.loads(Path(args.results).read_text()), args.data, args.summary))
        return
    if args.plot_only:
        res = Path(args.results)  # one call's rows: a plot of its own next to the all-rows plot
        out = res.with_name(f"{res.stem}_{args.plot_call}.png") if args.plot_call else res.with_suffix(".png")
        plot(json.loads(res.read_text()), args.data, out, args.plot_call)
        return
    Frontier(args).main()
    plot(json.loads(Path(args.results).read_text()), args.data, Path(args.results).with_suffix(".png"))


if __name__ == "__main__":
    main()
