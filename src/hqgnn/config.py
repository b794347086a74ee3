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
    # --- code formats (see README "Code formats"): what is stored per item and how queries score ---
    user_bits: int = -1  # -1: users use the item width (symmetric codes); 0: float queries (asymmetric); 1..8
    center: bool = False  # quantize relative to the table's mean vector (a per-item term is stored when users are quantized)
    rotation: str = "none"  # none | itq: an orthogonal rotation (ITQ, fitted on the warm-start items) folded into the encoder
    scale_dtype: str = "float32"  # float32 | float16: how the per-row scales (and per-item terms) are stored and scored
    distill: str = "none"  # none | score | rank: distillation from the float teacher (train.init_from, or quant.teacher)
    distill_weight: float = 1.0  # weight of the distillation loss next to BPR
    distill_temperature: float = 1.0  # softmax temperature of score distillation
    distill_topk: int = 10  # teacher items per user for rank distillation
    teacher: str = ""  # run directory of the float teacher (default: train.init_from)


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
