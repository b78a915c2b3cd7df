"""Benchmarks that print numbers (never pass/fail); ``refam bench ...`` or ``python -m refam.bench``.

- ``capture`` (:mod:`.flux`): what the expression branch costs on a random FLUX-architecture
  transformer (full width 3072 by default), fp32 and bf16 side by side in one process: the
  forward without and with the capture, the branch's own seconds and bytes
  (:class:`~refam.backends.branch_cost.BranchMeter`), both overhead ratios, min / median / max
  over interleaved runs, and the amortisation over 8 expressions (:mod:`.capture_cost`).
- ``features`` (:mod:`.features`): one plain forward against the single pass, one pass per σ and
  RF-inversion (28 + 28 steps) without and with the capture, 1 and 8 expressions, side by side:
  seconds, ratio to a plain forward, per-step capture overhead, memory.
- ``mochi`` (:mod:`.mochi`): the same on a random full-size Mochi (a GPU job).
- ``video`` (:mod:`.video`): SAM2 video propagation fps and peak memory against clip length.
- ``memory`` (:mod:`.memory`): peak RSS of ``refam segment`` (the embedded toy model, CPU) on a
  synthetic image of ``--size`` pixels, measured in a child process (target 1.5 GB).
- ``toy`` (:mod:`refam.toy.bench`): the toy model on held-out scenes, baselines and ablations.
"""

from refam.bench.cli import main

__all__ = ["main"]
