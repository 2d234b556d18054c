"""Apps built on the package: the synthetic-rooms demo, benchmarks and model analysis (FLOPs)."""
