"""hqgnn: LightGCN recommendation with Hessian-aware quantized (b-bit) node embeddings."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["HQGNN", "__version__"]


def __getattr__(name: str) -> Any:
    # imported on first use, so `import hqgnn` (and the CLI's start-up) stays light
    if name == "HQGNN":
        from .estimator import HQGNN

        return HQGNN
    raise AttributeError(f"module 'hqgnn' has no attribute {name!r}")
