"""Encoders and the quantized recommendation model."""

from .lightgcn import LightGCN
from .hqgnn import QuantizedRecommender

__all__ = ["LightGCN", "QuantizedRecommender"]
