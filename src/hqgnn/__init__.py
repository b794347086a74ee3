"""hqgnn: LightGCN recommendation with Hessian-aware quantized (b-bit) node embeddings."""

__version__ = "0.1.0"
