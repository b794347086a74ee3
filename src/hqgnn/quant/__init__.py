"""Embedding quantization for HQ-GNN: the b-bit quantizer, its STE/GSTE estimators and the Hessian-based delta."""

from .estimators import ESTIMATORS, GSTEQuantize, STEQuantize, integer_codes, level_range, quantize_with_estimator
from .hessian import estimate_delta, hutchinson_trace, hutchinson_traces
from .quantizer import SCALE_MODES, EmbeddingQuantizer, data_scale

__all__ = [
    "ESTIMATORS",
    "SCALE_MODES",
    "EmbeddingQuantizer",
    "GSTEQuantize",
    "STEQuantize",
    "data_scale",
    "estimate_delta",
    "hutchinson_trace",
    "hutchinson_traces",
    "integer_codes",
    "level_range",
    "quantize_with_estimator",
]
