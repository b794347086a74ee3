"""Encoders and the quantized recommendation model."""

from .lightgcn import LightGCN
from .hqgnn import HQGNNModel

__all__ = ["HQGNNModel", "LightGCN"]


def __getattr__(name: str) -> object:
    if name == "QuantizedRecommender":  # deprecated alias of HQGNNModel
        from . import hqgnn

        return hqgnn.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
