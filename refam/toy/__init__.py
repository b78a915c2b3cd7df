"""Synthetic "toy world" of flat-coloured shapes for tests and benchmarks; not user-facing API.

A tiny FLUX-architecture model is trained on :mod:`refam.toy.scenes` so end-to-end tests can check
that the RefAM point lands on the referred object against exact, analytic ground truth. Import the
submodule explicitly; this package imports nothing heavy.
"""
