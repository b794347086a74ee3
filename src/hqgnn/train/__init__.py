"""BPR training of the (quantized) LightGCN: sampling, the training loop, checkpoints."""

from .sampler import BPRSampler
from .trainer import Trainer, TrainResult

__all__ = ["BPRSampler", "Trainer", "TrainResult"]
