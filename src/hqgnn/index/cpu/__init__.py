"""CPU kernels of the code indexes: numba and LLVM-IR (AVX2) scans, selection heaps."""
