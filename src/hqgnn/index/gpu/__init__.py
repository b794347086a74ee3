"""CUDA searchers of the code indexes: torch two-phase search and the Triton scan kernels."""
