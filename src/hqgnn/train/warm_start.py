"""Starting a run from another: the warm start (PCA-projected from a wider run), ITQ fold, scale init, the teacher."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..config import RunConfig
from ..data.dataset import InteractionData
from ..errors import HqgnnError
from ..eval import exclusion_mask_fill
from ..models import HQGNNModel
from ..topk import stable_topk

log = logging.getLogger("hqgnn.train")


def warm_start(model: HQGNNModel, adj: Any, cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Load ``run_dir``'s layer-0 table into ``model`` (``train.init_projection=pca``: a wider run's, projected),
    then fold the ITQ rotation and initialise learnable scales as ``cfg`` asks. Returns what was loaded (path,
    source epoch, shapes, projection)."""
    path = run_dir / "model.safetensors"
    if not path.exists():
        raise HqgnnError(f"{path}: --init-from needs a finished run directory with model.safetensors")
    weights = load_file(str(path))
    emb = weights.get("encoder.embedding.weight")
    want = model.encoder.embedding.weight.shape
    wider = emb is not None and emb.shape[0] == want[0] and emb.shape[1] > want[1]
    projected = wider and cfg.train.init_projection == "pca"
    if emb is None or (emb.shape != want and not projected):
        hint = " (a wider run: train.init_projection=pca)" if wider else ""
        raise HqgnnError(f"{path}: encoder weights missing or of another shape (other data or --dim?){hint}")
    if projected:
        emb = emb.float() @ _pca_projection(run_dir, int(want[1]))
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(emb)
    info = _init_info(run_dir, path, weights)
    if projected:
        info["projection"] = f"pca {int(weights['encoder.embedding.weight'].shape[1])} -> {int(want[1])}"
    log.info("--init-from: loaded %s", ", ".join(f"{k} {v}" for k, v in info.items()))
    if model.quantized and cfg.quant.rotation == "itq":
        fold_rotation(model, adj, cfg.train.seed)
    if model.quantized and cfg.quant.learnable_scale:
        init_learnable_scales(model, adj)
    return info


def _pca_projection(run_dir: Path, dim: int) -> torch.Tensor:
    from ..quant.rotation import pca_projection

    t = load_file(str(run_dir / "tables.safetensors")) if (run_dir / "tables.safetensors").exists() else {}
    if "user_emb" not in t or "item_emb" not in t:
        raise HqgnnError(f"{run_dir / 'tables.safetensors'}: train.init_projection=pca needs the wide run's tables")
    return pca_projection(t["user_emb"], t["item_emb"], dim)


@torch.no_grad()
def init_learnable_scales(model: HQGNNModel, adj: Any) -> None:
    users, items = model.final(adj)
    if model.center:
        users, items = users - users.mean(0, keepdim=True), items - items.mean(0, keepdim=True)
    if model.user_bits:
        model.user_quantizer.init_scale(users)
    model.item_quantizer.init_scale(items)


@torch.no_grad()
def fold_rotation(model: HQGNNModel, adj: Any, seed: int) -> None:
    """ITQ rotation fitted on the warm-start item embeddings, folded into the layer-0 table.

    LightGCN's propagation is linear and acts on rows, so rotating E0 by an orthogonal R rotates every
    final embedding by R and leaves every float score unchanged; the quantizer then sees rotated
    coordinates, and serving needs no separate rotation of the queries (it is part of the table).
    """
    from ..quant.rotation import itq_rotation

    _, items = model.final(adj)
    # layer-wise codes: every layer block is rotated by the same R (it acts on E0), so fit R on all blocks
    items = items.reshape(-1, model.encoder.dim)
    r = itq_rotation(items, seed=seed).to(model.encoder.embedding.weight.device)
    model.encoder.embedding.weight.copy_(model.encoder.embedding.weight @ r)
    log.info("quant.rotation=itq: folded a %dx%d ITQ rotation into the encoder", r.shape[0], r.shape[1])


@torch.no_grad()
def set_teacher(model: HQGNNModel, cfg: RunConfig, run_dir: Path, data: InteractionData, device: torch.device) -> None:
    """Load the float teacher's final tables for distillation (and its top items per user for rank
    distillation, train items excluded)."""
    path = run_dir / "tables.safetensors"
    if not str(run_dir) or not path.exists():
        raise HqgnnError(f"{path}: quant.distill needs a float teacher run (train.init_from or quant.teacher)")
    t = load_file(str(path))
    tu, ti = t.get("user_emb"), t.get("item_emb")
    if tu is None or ti is None or tu.shape[0] != data.n_users or ti.shape[0] != data.n_items:
        raise HqgnnError(f"{path}: teacher tables missing or for other data ({data.n_users} users, {data.n_items} items)")
    tu, ti = tu.to(device).float(), ti.to(device).float()
    top = None
    if cfg.quant.distill == "rank":
        r = max(1, min(cfg.quant.distill_topk, data.n_items))
        train_m = data.matrix(data.train)
        indptr = torch.from_numpy(train_m.indptr.astype(np.int64)).to(device)
        indices = torch.from_numpy(train_m.indices.astype(np.int64)).to(device)
        parts = []
        for start in range(0, data.n_users, 4096):  # bounded (4096 x n_items) score blocks
            users = torch.arange(start, min(start + 4096, data.n_users), device=device)
            scores = exclusion_mask_fill(tu[users] @ ti.T, users, indptr, indices)
            parts.append(stable_topk(scores, r)[1])
        top = torch.cat(parts)
    model.set_teacher(tu, ti, top)
    log.info("distillation (%s) from the float teacher %s", cfg.quant.distill, run_dir)


def _init_info(run_dir: Path, path: Path, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Path, source epoch (best epoch in its metrics.json, if any) and tensor shapes of a warm start."""
    epoch = None
    try:
        epoch = json.loads((run_dir / "metrics.json").read_text()).get("best_epoch")
    except (OSError, ValueError):
        pass
    shapes = {k: list(v.shape) for k, v in weights.items() if k.startswith("encoder.")}
    return {"path": str(path), "epoch": epoch, "shapes": shapes}
