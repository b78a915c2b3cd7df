"""Synthetic "toy worlds" of coloured shapes for tests and benchmarks; not user-facing API.

Tiny FLUX-architecture models are trained on :mod:`refam.toy.scenes` (world v1: flat shapes, the
embedded default) and :mod:`refam.toy.scenes_v2` (world v2: nouns drawn as interior textures) so
end-to-end tests can check that the RefAM point lands on the referred object against exact, analytic
ground truth; :mod:`refam.toy.worlds` names each world and its weights. Import the
submodule explicitly; this package imports nothing heavy.
"""
