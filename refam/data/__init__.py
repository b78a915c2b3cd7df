"""Benchmark datasets in their official layouts (nothing is downloaded)."""
