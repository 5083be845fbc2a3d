"""Peers measured beside modelserve in the benchmarks (stock KServe as users write it)."""
