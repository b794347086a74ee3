"""Typed run configuration: one dataclass per concern, loadable from TOML, overridable from the CLI."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HqgnnError


@dataclass
class DataConfig:
    """Where interactions come from and how they are split."""

    source: str = "synthetic"  # "synthetic", "gowalla", "yelp2018", a LightGCN dir, or a CSV/TSV/Parquet file
    format: str = "auto"  # auto | lightgcn | csv | tsv | parquet
    data_dir: str = ""  # where named datasets live (else $HQGNN_DATA, else the download cache)
    cache_dir: str = ""  # download cache (else ~/.cache/hqgnn)
    user_col: str = "user"
    item_col: str = "item"
    time_col: str = ""  # optional timestamp column, needed for split = "leave_last"
    sep: str = ""  # CSV separator; "" = from the extension (.tsv -> tab, else comma)
    min_user_interactions: int = 0  # k-core filter (0 = off)
    min_item_interactions: int = 0
    split: str = "random"  # random | leave_last  (interaction logs only; LightGCN dirs come split)
    test_ratio: float = 0.2
    val_ratio: float = 0.1  # per-user holdout carved from train for model selection
    seed: int = 2020
    # synthetic generator
    synthetic_users: int = 3000
    synthetic_items: int = 2000
    synthetic_communities: int = 20
    synthetic_mean_activity: float = 30.0


@dataclass
class ModelConfig:
    """The LightGCN encoder."""

    dim: int = 64
    layers: int = 3  # 0 = matrix factorization
    init_std: float = 0.1


@dataclass
class QuantConfig:
    """The quantizer and its gradient estimator."""

    bits: int = 0  # 0 = full precision (no quantizer); 1..8
    estimator: str = "none"  # none | ste | gste
    scale: str = "row"  # row | tensor
    learnable_scale: bool = False
    delta: float = -1.0  # < 0: estimate from the Hessian trace; >= 0: fixed by hand
    delta_every: int = 10  # epochs between Hessian re-estimates
    delta_batches: int = 4  # mini-batches averaged per estimate
    hutchinson_tol: float = 1e-3
    hutchinson_max_probes: int = 50
    separate_delta: bool = False  # one delta for users and one for items


@dataclass
class TrainConfig:
    """BPR optimisation, validation and early stopping."""

    epochs: int = 50
    max_seconds: float = 0.0  # wall-clock training budget; stop after the epoch that crosses it (0 = none)
    batch_size: int = 2048
    sampling: str = "edge"  # edge: every training pair once per epoch | user: uniform users, then a random positive (LightGCN's)
    lr: float = 1e-3
    reg: float = 1e-4
    eval_every: int = 5
    patience: int = 5  # evaluations without improvement before stopping (0 = never stop early)
    select_metric: str = "recall@20"
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 2020
    init_from: str = ""  # warm start from a run directory (full-precision run for quantized training)
    eval_batch_size: int = 0  # users per evaluation batch (0 = automatic)
    cuda_graph: bool = True  # on CUDA, replay each full-size step as a CUDA graph (the last partial batch is dropped)
    dist_backend: str = "auto"  # under torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    dist_timeout_s: float = 300.0  # a collective waiting longer than this (dead or hung peer) fails the job
    # learning-rate schedule, set once per epoch: lr * warm-up * decay(progress); progress = epoch / epochs,
    # or the fraction of train.max_seconds spent when a time budget is set (see README "Learning-rate schedules")
    lr_schedule: str = "constant"  # constant | cosine | linear | step
    warmup_epochs: float = 0.0  # linear warm-up from lr / warmup_epochs to lr over the first epochs (0 = none)
    lr_min_ratio: float = 0.0  # cosine / linear: final lr as a fraction of lr
    lr_step_epochs: int = 0  # step: multiply the lr by lr_step_gamma every this many epochs
    lr_step_gamma: float = 0.1
    negatives: int = 1  # uniform negatives per positive; the BPR loss averages over them
    refit: bool = False  # after selection on validation, retrain on train + validation for best_epoch epochs
    protocol: str = "validation"  # validation | paper (train on all of train.txt, select the epoch on TEST)


@dataclass
class EvalConfig:
    """Full-ranking evaluation."""

    ks: list[int] = field(default_factory=lambda: [20, 50])


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "config") -> "RunConfig":
        cfg = cls()
        cfg.update(raw, origin=origin)
        return cfg

    def update(self, raw: dict[str, Any], origin: str = "config") -> None:
        """Merge a nested {section: {field: value}} dict, checking names and types."""
        for section, values in raw.items():
            if not hasattr(self, section) or not isinstance(values, dict):
                raise HqgnnError(f"{origin}: unknown config section [{section}]")
            target = getattr(self, section)
            for key, value in values.items():
                set_field(target, key, value, f"{origin}: [{section}] {key}")

    def set(self, dotted: str, value: Any) -> None:
        section, _, key = dotted.partition(".")
        if not hasattr(self, section):
            raise HqgnnError(f"unknown config key {dotted!r}")
        set_field(getattr(self, section), key, value, dotted)


def set_field(target: Any, key: str, value: Any, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise HqgnnError(f"{where}: unknown setting (known: {', '.join(fields)})")
    current = getattr(target, key)
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                value = value.lower() in ("1", "true", "yes", "on")
            value = bool(value)
        elif isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value)
        elif isinstance(current, float):
            value = float(value)
        elif isinstance(current, list):
            value = [int(v) for v in (value if isinstance(value, (list, tuple)) else str(value).split(","))]
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise HqgnnError(f"{where}: expected {type(current).__name__}, got {value!r}") from None
    setattr(target, key, value)


def load_config(path: str | Path | None) -> RunConfig:
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HqgnnError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise HqgnnError(f"{path}: invalid TOML ({exc})") from None
    return RunConfig.from_dict(raw, origin=str(path))


def dump_config(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())
