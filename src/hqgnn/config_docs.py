"""The configuration described for people: one line of meaning per field, the field listing of `hqgnn config`
and the docs' configuration page, and the complete commented TOML of `hqgnn config --toml`."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import Any

from .config import RULES, SECTIONS, RunConfig
from .errors import HqgnnError
from .validation import Range

# --- Field documentation: the one source of `hqgnn config`, `hqgnn config --toml` and the docs' configuration page ---
# One line of meaning per field, keyed "section.field". tests/test_config_listing.py fails when a field has no
# line here (or a line names no field), so a field added to a dataclass above must be documented to pass.
FIELD_HELP: dict[str, str] = {
    # data
    "data.source": "where interactions come from: synthetic, gowalla, yelp2018, a LightGCN dir, or a CSV/TSV/Parquet file",
    "data.format": "file format of data.source; auto = from the path (a dir is LightGCN, else the extension)",
    "data.data_dir": "folder holding named datasets (empty: $HQGNN_DATA, else the download cache)",
    "data.cache_dir": "download cache for named datasets (empty: ~/.cache/hqgnn)",
    "data.user_col": "user id column of an interaction log",
    "data.item_col": "item id column of an interaction log",
    "data.time_col": "timestamp column of an interaction log (needed by data.split = leave_last; empty = none)",
    "data.sep": "CSV separator (empty: from the extension, .tsv -> tab, else comma)",
    "data.min_user_interactions": "k-core filter: drop users with fewer interactions (0 = off)",
    "data.min_item_interactions": "k-core filter: drop items with fewer interactions (0 = off)",
    "data.split": "how an interaction log is split into train / test (LightGCN dirs come split)",
    "data.test_ratio": "fraction of each user's interactions held out for test (data.split = random)",
    "data.val_ratio": "fraction of each user's train interactions held out for validation (model selection)",
    "data.val_min_per_user": "at least this many validation pairs per user with >= 2 train pairs (0: round(val_ratio * k) only)",
    "data.seed": "seed of the data split and of the synthetic generator",
    "data.synthetic_users": "synthetic data: number of users",
    "data.synthetic_items": "synthetic data: number of items (items nobody trains on are dropped)",
    "data.synthetic_communities": "synthetic data: number of latent item communities",
    "data.synthetic_mean_activity": "synthetic data: mean interactions per user",
    # model
    "model.dim": "embedding dimension",
    "model.layers": "LightGCN propagation layers (0 = matrix factorization)",
    "model.init_std": "standard deviation of the normal initialisation of the layer-0 embeddings",
    "model.normalize": "L2-normalize the final user / item embeddings: cosine scores (meant for train.loss = softmax)",
    # quant
    "quant.bits": "code width in bits per dimension (0 = full precision, no quantizer; 1 = sign codes)",
    "quant.estimator": "gradient estimator of the quantizer: auto (gste when bits > 0, else none) | none | ste | gste",
    "quant.scale": "one quantization scale per row (user / item) or one per table",
    "quant.learnable_scale": "learn the scale of 2..8-bit codes by gradient (LSQ) instead of fitting it",
    "quant.delta": "GSTE delta: < 0 estimates it from the Hessian trace, >= 0 fixes it by hand (0 = STE)",
    "quant.delta_every": "epochs between Hessian (delta) re-estimates",
    "quant.delta_batches": "mini-batches averaged per delta estimate",
    "quant.hutchinson_tol": "relative tolerance at which Hutchinson's trace estimate stops adding probes",
    "quant.hutchinson_max_probes": "most probes per Hutchinson trace estimate",
    "quant.separate_delta": "estimate one delta for users and one for items (else one for both)",
    "quant.user_bits": "query (user) code width: -1 = quant.bits (symmetric), 0 = float queries, 1..8 bits",
    "quant.center": "quantize relative to the table's mean vector (stores a per-item term with quantized queries)",
    "quant.rotation": "orthogonal rotation before quantizing: none, or itq (fitted on the warm-start items)",
    "quant.scale_dtype": "how per-row scales (and per-item terms) are stored and scored",
    "quant.distill": "distillation from the float teacher: none | score (softmax KL) | rank (teacher's top items)",
    "quant.distill_weight": "weight of the distillation loss next to BPR",
    "quant.distill_temperature": "softmax temperature of score distillation",
    "quant.distill_topk": "teacher items per user for rank distillation",
    "quant.teacher": "run directory of the float teacher (empty: train.init_from)",
    "quant.layerwise": "BiGeaR-style codes: every LightGCN layer coded and concatenated (needs quant.user_bits = 0)",
    # train
    "train.epochs": "maximum training epochs",
    "train.max_seconds": "wall-clock training budget: stop after the epoch that crosses it (0 = none)",
    "train.batch_size": "training triples (user, positive, negatives) per step",
    "train.sampling": "edge: every training pair once per epoch | user: uniform users, then a positive (LightGCN's)",
    "train.lr": "Adam learning rate (the peak of a schedule)",
    "train.reg": "L2 weight on the batch's layer-0 embeddings",
    "train.eval_every": "validate every this many epochs (also the checkpoint interval)",
    "train.patience": "validations without improvement before stopping early (0 = never stop early)",
    "train.select_metric": "validation metric that selects the best epoch: <recall|ndcg|precision|hit_rate>@<k in eval.ks>",
    "train.device": "where to train and score",
    "train.seed": "seed of the initialisation and the sampling",
    "train.init_from": "warm start from a run directory (a full-precision run for quantized training)",
    "train.init_projection": "a wider init_from run: none (refused) or pca (its layer-0 table projected onto its top principal directions)",
    "train.eval_batch_size": "users per evaluation batch (0 = automatic)",
    "train.cuda_graph": "on CUDA, replay each full-size step as a CUDA graph (the last partial batch is dropped)",
    "train.dist_backend": "torch.distributed backend under torchrun: auto (nccl on CUDA, gloo on CPU) | nccl | gloo",
    "train.dist_timeout_s": "seconds a collective may wait (dead or hung peer) before the job fails",
    "train.lr_schedule": "learning-rate schedule, set once per epoch (over train.max_seconds when a budget is set)",
    "train.warmup_epochs": "linear warm-up from lr / warmup_epochs to lr over the first epochs (0 = none)",
    "train.lr_min_ratio": "cosine / linear schedules: the final lr as a fraction of lr",
    "train.lr_step_epochs": "step schedule: multiply the lr by lr_step_gamma every this many epochs",
    "train.lr_step_gamma": "step schedule: the lr factor at each step",
    "train.negatives": "uniform negatives per positive; the loss averages over them",
    "train.loss": "bpr | softmax (sampled softmax against the batch's shared negatives, divided by temperature)",
    "train.temperature": "temperature of the sampled softmax (train.loss = softmax)",
    "train.refit": "after selection on validation, retrain on train + validation for the selected number of epochs",
    "train.protocol": "validation (select on validation) | paper (train on all train data, select the epoch on TEST)",
    # eval
    "eval.ks": "cut-offs K of the evaluated metrics (recall, ndcg, precision, hit_rate @ K)",
    "eval.max_users": "evaluate a seeded uniform sample of at most this many users with held-out items (0 = all); "
                      "for millions of users, where full ranking of every user costs more than training",
}


@dataclass(frozen=True)
class FieldDoc:
    """One config field as ``hqgnn config`` and the configuration reference show it."""

    name: str  # "section.field"
    type: str  # "int", "float", "bool", "str", "list[int]"
    default: Any
    range: str  # the validation rule in words ("[0, 1)", ">= 1", "edge | user"); "" when only the type is checked
    help: str


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def describe_rule(rule: Any, tp: Any = None) -> str:
    """A validation rule of :data:`RULES` in words: choices ``a | b``, ranges ``[lo, hi]`` / ``>= lo``."""
    if rule is None:
        return "true | false" if tp is bool else ""
    if isinstance(rule, tuple) and rule and all(isinstance(c, str) for c in rule):
        return " | ".join(rule)
    if typing.get_origin(tp) is list:  # RULES apply a list field's rule to every element
        return "each " + describe_rule(rule, typing.get_args(tp)[0])
    if isinstance(rule, tuple):
        rule = Range(rule[0], rule[1])
    if isinstance(rule, Range):
        if rule.hi == math.inf:
            return f"{'>' if rule.lo_open else '>='} {rule.lo:g}"
        return f"{'(' if rule.lo_open else '['}{rule.lo:g}, {rule.hi:g}{')' if rule.hi_open else ']'}"
    doc = getattr(rule, "__doc__", None)  # a callable rule documents what it accepts in its docstring
    return doc.strip() if doc else ""




def config_fields(cfg: RunConfig | None = None) -> list[FieldDoc]:
    """Every field of :class:`RunConfig` in declaration order, with its type, default, range and meaning.

    Parameters
    ----------
    cfg
        Whose values to report as ``default`` (the built-in defaults when None).

    Returns
    -------
    list[FieldDoc]
        One entry per ``section.field``.
    """
    cfg = RunConfig() if cfg is None else cfg
    rows = []
    for section in SECTIONS:
        target = getattr(cfg, section)
        hints = typing.get_type_hints(type(target))
        for f in dataclasses.fields(target):
            key = f"{section}.{f.name}"
            rows.append(FieldDoc(key, _type_name(hints[f.name]), copy.deepcopy(getattr(target, f.name)),
                                 describe_rule(RULES.get(key), hints[f.name]), FIELD_HELP.get(key, "")))
    return rows


def config_toml(cfg: RunConfig | None = None) -> str:
    """A complete TOML config with every field, each preceded by a comment with its meaning, type and range.

    ``hqgnn train --config`` (and :func:`load_config`) read it back to ``cfg`` (the defaults when None).
    """
    cfg = RunConfig() if cfg is None else cfg
    defaults = {d.name: d.default for d in config_fields()}
    lines = ["# hqgnn run configuration: every field, with its meaning, type, range and default.",
             "# Use it with `hqgnn train --config FILE`; `--set section.field=value` overrides a field."]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for doc in config_fields(cfg):
            if not doc.name.startswith(section + "."):
                continue
            key = doc.name.partition(".")[2]
            facts = [f"type: {doc.type}"] + ([f"range: {doc.range}"] if doc.range else [])
            if doc.default != defaults[doc.name]:  # a value from cfg: say what the built-in default is
                facts.append(f"default: {_toml_value(defaults[doc.name])}")
            lines.append(f"# {doc.help}")
            lines.append(f"#   {', '.join(facts)}")
            lines.append(f"{key} = {_toml_value(doc.default)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """``value`` as a TOML literal, lists on one line (tomli_w spreads arrays over several lines)."""
    import tomli_w

    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


@functools.lru_cache(maxsize=1)
def field_sections() -> dict[str, tuple[str, ...]]:
    """config field name -> the sections that have a field of that name (``seed`` is in data and train)."""
    out: dict[str, list[str]] = {}
    cfg = RunConfig()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            out.setdefault(f.name, []).append(section)
    return {name: tuple(where) for name, where in out.items()}


def section_field(name: str) -> tuple[str, str]:
    """("section", "field") of a parameter given as ``field`` (unique across sections) or ``section.field``."""
    section, _, field = name.rpartition(".")
    sections = field_sections()
    if not section:
        where = sections.get(name)
        if where is None:
            from .validation import hint as _hint

            raise HqgnnError(f"HQGNN: unknown parameter {name!r}{_hint(name, sections, 'parameter')}")
        if len(where) > 1:
            raise HqgnnError(f"HQGNN: {name!r} is a field of {' and '.join(where)}: "
                             f"pass it as {', '.join(repr(f'{s}.{name}') for s in where)}")
        section, field = where[0], name
    if section not in sections.get(field, ()):
        raise HqgnnError(f"HQGNN: unknown parameter {name!r}")
    return section, field
