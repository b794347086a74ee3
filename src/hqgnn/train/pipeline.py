"""One training run end to end: load data, train, evaluate on test, write the run directory."""

from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import RunConfig, dump_config, load_config
from ..data import load_dataset_with_counts
from ..data.dataset import InteractionData
from ..errors import HqgnnError
from ..device import check_device
from ..io import DirLock, link_or_copy, listed, write_text
from ..manifest import MANIFEST
from ..run import CONFIG, METRICS, RESUMABLE, save_run
from . import distributed
from .trainer import CHECKPOINT, Trainer

log = logging.getLogger("hqgnn.train")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_training(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train as ``cfg`` says and write ``out_dir``; returns the metrics dict that is also in metrics.json.

    ``out_dir`` must be absent or empty, unless ``resume`` (continue the run there; the directory
    must exist) or ``overwrite`` (the new run is trained in a sibling ``.<name>.partial`` directory
    and replaces the old one only once it finished). A new run that fails removes what it wrote,
    unless it holds a checkpoint (kept, without results, to ``--resume`` from); a failed overwrite
    removes its partial directory and leaves the old run as it was. Resuming a finished run also
    works beside it and swaps the result in whole, so a refused, failed or killed resume changes
    nothing. ``out_dir`` is locked (:class:`hqgnn.io.DirLock`) for the whole run: a second writer is
    refused. Under torchrun this joins the process group first; every rank trains and returns the
    metrics, only rank 0 writes (and locks) ``out_dir``.
    """
    cfg.validate()
    check_device(cfg.train.device)
    out_dir = Path(out_dir)
    main = distributed.is_main() if distributed.is_active() else int(os.environ.get("RANK", "0")) == 0
    created = _first_missing(out_dir)  # the topmost folder this run creates (None: out_dir exists)
    # refuse before the lock creates out_dir; checked again under the lock, which alone may clear a stub
    # (before it, the "stub" may be the config.toml of a run that is starting right now)
    check_out_dir(out_dir, resume, overwrite, clear_stub=False)
    lock = DirLock(out_dir).acquire() if main else None
    try:
        return _run_locked(cfg, out_dir, resume, progress, on_epoch_end, overwrite, main, created)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(cfg: RunConfig, out_dir: Path, resume: bool, progress: bool,
                on_epoch_end: Callable[[int], None] | None, overwrite: bool, main: bool,
                created: Path | None) -> dict[str, Any]:
    # before the process group: no rank has written yet; only the lock holder (rank 0) may clear a stub
    check_out_dir(out_dir, resume, overwrite, clear_stub=main)
    if resume:
        check_resume_config(out_dir, cfg)
    finished = resume and (out_dir / MANIFEST).exists() or resume and (out_dir / METRICS).exists()
    staged = overwrite or finished  # trained beside out_dir, swapped in whole at the end
    work = out_dir.parent / f".{out_dir.name}.partial" if staged else out_dir
    if main and staged:
        if work.exists():
            shutil.rmtree(work)  # left by an earlier overwrite / resume that was killed
        if finished:  # continue from copies (hard links) of the finished run's resumable state
            work.mkdir()
            for name in RESUMABLE:
                if (out_dir / name).exists():
                    link_or_copy(out_dir / name, work / name)
    try:
        with distributed.process_group(cfg.train):
            metrics = _run_training(cfg, work, resume, progress, on_epoch_end, final_dir=out_dir)
    except BaseException as exc:
        if main and staged:
            shutil.rmtree(work, ignore_errors=True)
        elif main and not resume:
            # a checkpoint is real progress (a crashed peer, Ctrl-C, a lost GPU): keep it resumable
            if (work / CHECKPOINT).exists():
                log.warning("%s: run stopped (%s); it holds a checkpoint but no results: continue with "
                            "--resume, or delete it", work, type(exc).__name__)
            elif created is not None:
                shutil.rmtree(created, ignore_errors=True)
            elif work.exists():  # it existed empty: empty it again
                for child in listed(work):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    if main and staged:
        shutil.rmtree(work, ignore_errors=True)  # its resumable files now live (linked) in out_dir
    return metrics


def _first_missing(path: Path) -> Path | None:
    """The topmost ancestor of ``path`` (or ``path`` itself) that does not exist yet."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


# --resume continues the same run: only these may differ from its config.toml (budget, device, where data lives)
RESUME_MAY_CHANGE = frozenset({
    "train.epochs", "train.max_seconds", "train.patience", "train.device", "train.eval_batch_size",
    "train.cuda_graph", "train.dist_backend", "train.dist_timeout_s", "data.data_dir", "data.cache_dir",
})


def check_resume_config(out_dir: Path, cfg: RunConfig) -> None:
    """Refuse a --resume whose config differs from the run's own in anything but :data:`RESUME_MAY_CHANGE`.

    Checked before anything is written, so a refused resume leaves the run exactly as it was.
    """
    path = out_dir / CONFIG
    if not path.exists():
        return  # a stopped run from before config.toml was written first: nothing to compare
    stored = load_config(path).to_dict()
    new = cfg.to_dict()
    changed = [f"{s}.{k}" for s in new for k in new[s] if stored.get(s, {}).get(k) != new[s][k]
               and f"{s}.{k}" not in RESUME_MAY_CHANGE]
    if changed:
        key = changed[0]
        s, _, k = key.partition(".")
        raise HqgnnError(f"{path}: --resume cannot change {key} ({stored[s][k]!r} -> {new[s][k]!r}"
                         f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); it continues the same "
                         "run (may change: --epochs, train.max_seconds, --patience, --device); train a new run "
                         "with --out or --overwrite instead")


_STUB_FILES = frozenset({CONFIG, "best.safetensors"})  # best weights are saved just before the first checkpoint


def _is_stub(out_dir: Path) -> bool:
    """What a run killed before its first checkpoint leaves (kill -9 cannot clean up): config.toml, best weights
    and temp files, but no checkpoint (nothing to resume) and no results."""
    children = listed(out_dir)
    return bool(children) and all(
        c.is_file() and (c.name in _STUB_FILES or (c.name.startswith(".") and ".tmp" in c.name)) for c in children)


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool, clear_stub: bool = True) -> None:
    """Refuse to write over a run by accident: one :class:`HqgnnError` line saying what to pass instead.

    A stub (see :func:`_is_stub`) is accepted, and removed when ``clear_stub`` (only under the lock)."""
    if resume and overwrite:
        raise HqgnnError("--resume and --overwrite exclude each other")
    if out_dir.exists() and not out_dir.is_dir():
        raise HqgnnError(f"{out_dir}: --out exists and is not a directory")
    if resume:
        if not out_dir.is_dir():
            raise HqgnnError(f"{out_dir}: no such run directory to --resume")
        if not (out_dir / CHECKPOINT).is_file():
            raise HqgnnError(f"{out_dir / CHECKPOINT}: no checkpoint to resume from")
        return
    if out_dir.is_dir() and listed(out_dir) and not overwrite:
        if _is_stub(out_dir):  # nothing to resume and no results: reuse the folder
            if not clear_stub:
                return
            log.warning("%s: removing what a run stopped before its first checkpoint left (%s)", out_dir,
                        ", ".join(sorted(c.name for c in listed(out_dir))))
            for child in listed(out_dir):
                child.unlink()
            return
        what = "a run" if (out_dir / CONFIG).exists() else "files"
        raise HqgnnError(f"{out_dir}: already holds {what}; pass --overwrite to replace it or --resume to continue it")


def _run_training(
    cfg: RunConfig, out_dir: Path, resume: bool, progress: bool, on_epoch_end: Callable[[int], None] | None,
    final_dir: Path | None = None,
) -> dict[str, Any]:
    main = distributed.is_main()
    _check_protocol(cfg)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data, counts = load_dataset_with_counts(cfg.data)
    load_seconds = time.perf_counter() - t0
    if main and not resume:  # a resumed run keeps its config.toml until the finished run replaces it
        write_text(out_dir / CONFIG, dump_config(cfg))
    trained = train_model(cfg, data, out_dir, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
    metrics = {**trained.metrics, "load_seconds": load_seconds, "data_counts": counts}
    if not main:
        return metrics
    save_run(final_dir or out_dir, cfg, metrics, trained.model_state, trained.tables, data.user_ids, data.item_ids,
             data.matrix(data.seen), history_metric=cfg.train.select_metric, carry_from=out_dir)
    protocol = trained.metrics["protocol"]
    log.info("test%s %s", "" if protocol == "validation" else f" ({protocol})",
             "  ".join(f"{k} {v:.4f}" for k, v in trained.metrics["test"].items() if k.split("@")[0] in ("recall", "ndcg")))
    return metrics


@dataclass
class TrainedModel:
    """What :func:`train_model` returns: the metrics dict, the weights and the scoring tables of a run."""

    metrics: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    tables: dict[str, torch.Tensor]


def train_model(
    cfg: RunConfig,
    data: InteractionData,
    work_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    on_epoch_end: Callable[[int], None] | None = None,
) -> TrainedModel:
    """Train on ``data`` (checkpoints in ``work_dir``), evaluate on its test split (none: ``test`` is {}).

    The in-memory core of :func:`run_training`, shared with the :class:`hqgnn.HQGNN` estimator.
    """
    log.info("data %s: %d users, %d items, %d train / %d val / %d test", data.name, data.n_users, data.n_items,
             len(data.train), len(data.val), len(data.test))
    trainer = Trainer(cfg, data, progress=progress, on_epoch_end=on_epoch_end)
    init_info = trainer.init_info or None
    result = trainer.fit(Path(work_dir), resume=resume)
    selected, refit = result, None
    if cfg.train.refit:
        trainer, result, refit = _refit(cfg, data, Path(work_dir), selected, resume, progress)
    model = trainer.model
    with torch.no_grad():
        users, items = model.final(trainer.adj)
        tables = {"user_emb": users, "item_emb": items}
        if model.quantized:
            tables.update(model.codes(trainer.adj))
    for name, t in tables.items():  # finite weights can still propagate to inf scores: never write such a run
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise HqgnnError(f"training diverged: the final {name} holds non-finite values; the learning rate is "
                             f"the likely cause: lower train.lr (now {cfg.train.lr:g}); no finished run was written")
    epoch_times = [h["epoch_seconds"] for h in selected.history if "epoch_seconds" in h]
    paper = cfg.train.protocol == "paper"
    metrics: dict[str, Any] = {
        "protocol": "paper (test-selected)" if paper else "validation+refit" if refit else "validation",
        # of the model this run directory serves (the refit model under validation+refit)
        "test": result.test if len(data.test) else {},
        "val": {} if paper else selected.val,
        "best_epoch": selected.best_epoch,
        "epochs_run": selected.epochs_run,
        "train_seconds": selected.train_seconds,
        "epoch_seconds_mean": float(np.mean(epoch_times)) if epoch_times else None,
        "load_seconds": 0.0,
        "memory": {**result.memory, **served_memory(tables, cfg)},
        "bits": cfg.quant.bits,
        "estimator": cfg.quant.estimator if cfg.quant.bits else "none",
        "device": device_name(trainer.device),
        "world_size": distributed.world_size(),
        "data": data.summary(),
        "init_from": init_info,
        "history": selected.history,
    }
    if selected.warm_start_val:  # the warm start's validation metrics (epoch 0: best_epoch 0 when it was kept)
        metrics["warm_start_val"] = selected.warm_start_val
    if paper:
        metrics["selected_on"] = "test"
        metrics["test_selected"] = selected.val  # == test: the epoch was chosen on these numbers
    if refit is not None:
        metrics["selected_test"] = selected.test
        metrics["refit"] = refit
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return TrainedModel(metrics, state, {k: v.detach().cpu() for k, v in tables.items()})


def served_memory(tables: dict[str, torch.Tensor], cfg: RunConfig) -> dict[str, Any]:
    """What the serving path holds per item: the code format's stored bytes (``format_bytes``, what the
    saved index files take), the CPU index's and the device index's held bytes (the device copy built
    with the torch backend on the host: the same tensors a CUDA index holds). Float runs: float32 rows.
    """
    if not cfg.quant.bits:
        d = tables["item_emb"].shape[1]
        return {"served_bytes_per_item": {"float32": 4.0 * d}}
    from ..index import CodeFormat, build_index

    tables = {k: v.detach().cpu() for k, v in tables.items()}  # a CUDA run's tables: the CPU index reads numpy
    codes = tables["item_codes"].numpy()
    term = tables.get("item_term")
    fmt = CodeFormat.from_config(cfg.quant, dim=codes.shape[1], term=term is not None)
    kw: dict[str, Any] = dict(scale=tables["item_scale"].float().numpy(),
                              term=None if term is None else term.float().numpy())
    held = {dev: build_index(codes, fmt, device="cpu", backend=backend, **kw).memory_bytes() / max(len(codes), 1)
            for dev, backend in (("cpu_index", "numba"), ("gpu_index", "torch"))}
    return {"served_bytes_per_item": {"format_bytes": fmt.item_bytes, **held}}


def _check_protocol(cfg: RunConfig) -> None:
    """Paper protocol: all of train.txt (no validation split); refit needs a validation split to refit on."""
    tc = cfg.train
    if tc.protocol == "paper":
        if tc.refit:
            raise HqgnnError("train.refit needs train.protocol=validation (paper already trains on all of train)")
        if cfg.data.val_ratio:
            log.warning("paper protocol: data.val_ratio %.3g -> 0; the epoch is selected on TEST", cfg.data.val_ratio)
            cfg.data.val_ratio = 0.0
    elif tc.refit and cfg.data.val_ratio <= 0:
        raise HqgnnError("train.refit needs a validation split (data.val_ratio > 0)")


def _refit(cfg: RunConfig, data: InteractionData, out_dir: Path, selected: Any, resume: bool,
           progress: bool) -> tuple[Trainer, Any, dict[str, Any]]:
    """Retrain from the same init on train + validation for the selected number of epochs.

    Same seed, so the same initial weights; the graph and the BPR triples both use train +
    validation; the per-epoch learning rates of the selection run are replayed for epochs
    1..best_epoch (so a time-budget schedule is reproduced exactly); the last epoch is kept.
    Working files (checkpoint, best weights) go to ``out_dir/refit``.
    """
    rc = copy.deepcopy(cfg)
    epochs = max(1, selected.best_epoch)
    rc.train.refit, rc.train.epochs, rc.train.max_seconds = False, epochs, 0.0
    rc.train.patience, rc.train.eval_every = 0, epochs  # one "evaluation" at the end: the last epoch is kept
    full = InteractionData(data.name, data.n_users, data.n_items, data.seen, data.val[:0], data.test,
                           data.user_ids, data.item_ids)
    log.info("refit on train + validation (%d pairs) for %d epochs", len(full.train), epochs)
    trainer = Trainer(rc, full, progress=progress)
    trainer.lr_trace = [h["lr"] for h in selected.history[:epochs]]
    trainer.test_curve_every = max(1, cfg.train.eval_every)
    work = out_dir / "refit"
    result = trainer.fit(work, resume=resume and (work / "checkpoint.safetensors").exists())
    info = {"test": result.test, "epochs": epochs, "train_seconds": result.train_seconds,
            "train_pairs": int(len(full.train)), "lr_replayed_from_selection": True,
            "paper": _test_selected(result.history, cfg.train.select_metric)}
    return trainer, result, info


def _test_selected(history: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The refit curve's best epoch by TEST: a paper-protocol number (all of train.txt, test-selected).

    The refit trains on train + validation = all of train.txt, so picking its epoch on test is exactly
    how published tables report; it is labelled so wherever it appears and is never a goal number.
    """
    points = [h for h in history if f"test_curve_{metric}" in h]
    if not points:
        return None
    best = max(points, key=lambda h: h[f"test_curve_{metric}"])
    test = {k[len("test_curve_"):]: v for k, v in best.items() if k.startswith("test_curve_")}
    return {"test": test, "epoch": best["epoch"], "train_seconds": best["elapsed_seconds"], "selected_on": "test"}
