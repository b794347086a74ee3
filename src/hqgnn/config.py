"""Typed run configuration: one dataclass per concern, loadable from TOML, overridable from the CLI."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HqgnnError
from .validation import NON_NEGATIVE, POSITIVE, Range, check_rule, check_type, hint

# The gradient estimators of a quantizer: the one list the config, the model and quant/ all use.
QUANT_ESTIMATORS = ("ste", "gste")
# quant.estimator: "auto" = gste when quant.bits > 0, none otherwise; "none" = full precision.
ESTIMATOR_CHOICES = ("auto", "none") + QUANT_ESTIMATORS
DEFAULT_QUANT_ESTIMATOR = "gste"
# The ranking metrics the evaluator reports as "<name>@<k>" for every k in eval.ks (hqgnn.eval.metrics).
METRIC_NAMES = ("recall", "ndcg", "precision", "hit_rate")


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
    # at least this many validation pairs per user with >= 2 train pairs (0: round(val_ratio * k) only, so
    # users with fewer than ~1 / (2 val_ratio) pairs are absent from validation; 1: every user is in it)
    val_min_per_user: int = 0
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
    normalize: bool = False  # L2-normalize the final user/item embeddings: cosine scores (for train.loss=softmax)


@dataclass
class QuantConfig:
    """The quantizer and its gradient estimator."""

    bits: int = 0  # 0 = full precision (no quantizer); 1..8
    estimator: str = "auto"  # auto (gste when bits > 0, else none) | none | ste | gste
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
    layerwise: bool = False  # BiGeaR-style multi-layer codes: every LightGCN layer coded, concatenated (float queries)


@dataclass
class TrainConfig:
    """BPR optimisation, validation and early stopping."""

    epochs: int = 50  # 0 with init_from: the warm start quantized post hoc, evaluated and written (no training)
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
    # a wider init_from run: none (refused) | pca (its layer-0 table projected onto the top principal
    # directions of its final embeddings: the best rank-d linear map of a wide teacher, docs/decisions.md)
    init_projection: str = "none"
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
    # bpr | softmax: sampled softmax of each positive against all of the batch's batch_size * negatives
    # sampled items (shared negatives), scores divided by temperature (README "Training objectives")
    loss: str = "bpr"
    temperature: float = 0.1
    refit: bool = False  # after selection on validation, retrain on train + validation for best_epoch epochs
    protocol: str = "validation"  # validation | paper (train on all of train.txt, select the epoch on TEST)


@dataclass
class EvalConfig:
    """Full-ranking evaluation."""

    ks: list[int] = field(default_factory=lambda: [20, 50])
    max_users: int = 0  # evaluate a seeded uniform sample of at most this many users (0 = every user)


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
    def from_dict(cls, raw: dict[str, Any], origin: str = "config", validate: bool = True) -> "RunConfig":
        cfg = cls()
        cfg.update(raw, origin=origin)
        return cfg.validate(origin=origin) if validate else cfg

    def validate(self, origin: str | None = None) -> "RunConfig":
        """Check every field (type, range / choices, cross-field rules) and normalise; returns self.

        The one validation path of the CLI, the Python API and TOML loading. Types come from the
        dataclass annotations (an int is accepted for a float field and converted, a tuple for a
        list); ranges and choices from :data:`RULES`; then the cross-field rules: ``quant.estimator``
        "auto" resolves to gste when ``quant.bits > 0`` and to none at 0, ste / gste need bits >= 1,
        "none" needs bits = 0; ``train.select_metric`` must be one of the metrics the evaluator
        reports (``<recall|ndcg|precision|hit_rate>@<k>`` with k in ``eval.ks``). Attributes that are
        no field (a misspelt ``cfg.train.learning_rate = ...``) are errors with a "did you mean" hint.
        Raises :class:`HqgnnError` with one line, prefixed by ``origin`` (e.g. the TOML file) if given.
        """
        try:
            _validate(self)
        except HqgnnError as exc:
            raise HqgnnError(f"{origin}: {exc}" if origin else str(exc)) from None
        return self

    def update(self, raw: dict[str, Any], origin: str = "config") -> None:
        """Merge a nested {section: {field: value}} dict, checking names and types."""
        for section, values in raw.items():
            if not hasattr(self, section) or not isinstance(values, dict):
                raise HqgnnError(f"{origin}: unknown config section [{section}]{hint(section, SECTIONS, 'section')}")
            target = getattr(self, section)
            for key, value in values.items():
                set_field(target, key, value, f"{origin}: [{section}] {key}")

    def set(self, dotted: str, value: Any) -> None:
        section, dot, key = dotted.partition(".")
        # a bare field name (`--set lr=...`) or one in the wrong section: name the full key(s) it could be
        elsewhere = [n for n in full_names(dotted) if n != dotted]
        misplaced = section in SECTIONS and key not in {f.name for f in dataclasses.fields(getattr(self, section))}
        if elsewhere and (not dot or misplaced):
            raise HqgnnError(f"unknown field {dotted!r}; did you mean {' or '.join(elsewhere)}?")
        if section not in SECTIONS:
            raise HqgnnError(f"unknown config key {dotted!r}{hint(section, SECTIONS, 'section')}")
        set_field(getattr(self, section), key, value, dotted)


SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig))


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device_rule(v: str) -> str | None:
    """auto | cpu | cuda | cuda:N"""  # also how `hqgnn config` describes the rule
    return None if _DEVICE.fullmatch(v) else "must be auto, cpu, cuda or cuda:N"


# Per-field rules, "section.field" -> choices (tuple of str) | Range | (lo, hi) closed | callable(v) -> error or None.
# For list fields the rule applies to every element. Fields without an entry are only type-checked.
RULES: dict[str, Any] = {
    "data.format": ("auto", "lightgcn", "csv", "tsv", "parquet"),
    "data.split": ("random", "leave_last"),
    "data.min_user_interactions": NON_NEGATIVE,
    "data.min_item_interactions": NON_NEGATIVE,
    "data.test_ratio": Range(0.0, 1.0, hi_open=True),
    "data.val_ratio": Range(0.0, 1.0, hi_open=True),
    "data.val_min_per_user": NON_NEGATIVE,
    "data.seed": NON_NEGATIVE,
    "data.synthetic_users": (1, math.inf),
    "data.synthetic_items": (1, math.inf),
    "data.synthetic_communities": (1, math.inf),
    "data.synthetic_mean_activity": POSITIVE,
    "model.dim": (1, math.inf),
    "model.layers": NON_NEGATIVE,
    "model.init_std": POSITIVE,
    "quant.bits": (0, 8),
    "quant.estimator": ESTIMATOR_CHOICES,
    "quant.scale": ("row", "tensor"),
    "quant.delta_every": (1, math.inf),
    "quant.delta_batches": (1, math.inf),
    "quant.hutchinson_tol": NON_NEGATIVE,
    "quant.hutchinson_max_probes": (1, math.inf),
    "quant.user_bits": (-1, 8),
    "quant.rotation": ("none", "itq"),
    "quant.scale_dtype": ("float32", "float16"),
    "quant.distill": ("none", "score", "rank"),
    "quant.distill_weight": NON_NEGATIVE,
    "quant.distill_temperature": POSITIVE,
    "quant.distill_topk": (1, math.inf),
    "train.epochs": (0, math.inf),
    "train.max_seconds": NON_NEGATIVE,
    "train.batch_size": (1, math.inf),
    "train.sampling": ("edge", "user"),
    "train.init_projection": ("none", "pca"),
    "train.lr": POSITIVE,
    "train.reg": NON_NEGATIVE,
    "train.eval_every": (1, math.inf),
    "train.patience": NON_NEGATIVE,
    "train.device": _device_rule,
    "train.seed": NON_NEGATIVE,
    "train.eval_batch_size": NON_NEGATIVE,
    "train.dist_backend": ("auto", "nccl", "gloo"),
    "train.dist_timeout_s": POSITIVE,
    "train.lr_schedule": ("constant", "cosine", "linear", "step"),
    "train.warmup_epochs": NON_NEGATIVE,
    "train.lr_min_ratio": (0.0, 1.0),
    "train.lr_step_epochs": NON_NEGATIVE,
    "train.lr_step_gamma": (0.0, 1.0),
    "train.negatives": (1, math.inf),
    "train.loss": ("bpr", "softmax"),
    "train.temperature": POSITIVE,
    "train.protocol": ("validation", "paper"),
    "eval.ks": (1, math.inf),
    "eval.max_users": (0, math.inf),
}


def _validate(cfg: "RunConfig") -> None:
    extra = set(vars(cfg)) - set(SECTIONS)
    for name in sorted(extra):
        raise HqgnnError(f"unknown config section {name!r}{hint(name, SECTIONS, 'section')}")
    for section in SECTIONS:
        target = getattr(cfg, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        for name in sorted(set(vars(target)) - set(fields)):
            raise HqgnnError(f"unknown config key '{section}.{name}'"
                             f"{hint(f'{section}.{name}', [f'{section}.{f}' for f in fields])}")
        hints = typing.get_type_hints(type(target))
        for name in fields:
            key = f"{section}.{name}"
            value = check_type(key, hints.get(name, Any), getattr(target, name))
            if key in RULES:
                check_rule(key, RULES[key], value)
            setattr(target, name, value)
    if not cfg.eval.ks:
        raise HqgnnError("eval.ks must name at least one cut-off")
    q = cfg.quant
    if q.estimator == "auto":
        q.estimator = DEFAULT_QUANT_ESTIMATOR if q.bits else "none"
    if q.bits and q.estimator == "none":
        raise HqgnnError(f"quant.estimator none means full precision, but quant.bits is {q.bits}: "
                         f"use {', '.join(QUANT_ESTIMATORS)} or auto")
    if not q.bits and q.estimator != "none":
        raise HqgnnError(f"quant.estimator {q.estimator} needs quant.bits 1..8 (quant.bits is 0)")
    if q.bits and q.layerwise and (q.user_bits != 0 or cfg.model.layers < 1):
        raise HqgnnError("quant.layerwise codes every LightGCN layer against float queries: it needs "
                         f"quant.user_bits = 0 and model.layers >= 1 (got {q.user_bits} and {cfg.model.layers})")
    metrics = [f"{m}@{k}" for m in METRIC_NAMES for k in sorted(set(cfg.eval.ks))]
    if cfg.train.epochs == 0 and not cfg.train.init_from:
        raise HqgnnError("train.epochs 0 quantizes a trained run without training: it needs train.init_from")
    if cfg.train.select_metric not in metrics:
        raise HqgnnError(f"train.select_metric {cfg.train.select_metric!r} is not evaluated "
                         f"(eval.ks = {cfg.eval.ks}){hint(cfg.train.select_metric, metrics, 'metric')}")


def set_field(target: Any, key: str, value: Any, where: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(target)}
    if key not in fields:
        raise HqgnnError(f"{where}: unknown setting{hint(key, fields)}")
    current = getattr(target, key)
    try:
        if isinstance(current, bool):
            value = parse_bool(value)
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
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        what = "a boolean (true/false/1/0/yes/no)" if isinstance(current, bool) else type(current).__name__
        raise HqgnnError(f"{where}: expected {what}, got {shown}") from None
    setattr(target, key, value)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_bool(value: Any) -> bool:
    """A boolean from --set / TOML / the API, strictly: true/false/1/0/yes/no (any case) or a bool; else ValueError.

    ``bool("treu")`` is True and ``"treu" in ("1", "true", ...)`` is False: either way a typo would be
    read silently as some value, so anything else is refused.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected a boolean (true/false/1/0/yes/no), got {value!r}")


def load_config(path: str | Path | None, validate: bool = True) -> RunConfig:
    """The config in TOML file ``path`` (defaults when None), checked by :meth:`RunConfig.validate`."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HqgnnError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise HqgnnError(f"{path}: invalid TOML ({exc})") from None
    return RunConfig.from_dict(raw, origin=str(path), validate=validate)


def dump_config(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


def full_names(name: str) -> list[str]:
    """The ``section.field`` names whose field is ``name`` (``lr`` -> ``["train.lr"]``; ``seed`` -> data and train)."""
    field_name = name.rpartition(".")[2]
    return [f"{s}.{field_name}" for s in SECTIONS
            if any(f.name == field_name for f in dataclasses.fields(getattr(RunConfig(), s)))]
