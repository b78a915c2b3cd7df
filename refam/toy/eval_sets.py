"""Evaluation sets of either toy world: per referral kind, one example stream of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

Example = TypeVar("Example")


def per_kind_examples(
    seed: int,
    n_per_kind: int,
    kinds: Sequence[str],
    all_kinds: Sequence[str],
    draw: Callable[[np.random.Generator, str], Example],
) -> list[Example]:
    """``n_per_kind`` draws per kind, deterministic in ``seed``. Each kind's stream is keyed by its
    position in ``all_kinds``, so asking for a subset of kinds (or more examples of one) leaves the
    others' examples unchanged."""
    unknown = [k for k in kinds if k not in all_kinds]
    if unknown:
        raise ValueError(f"unknown referral kind {unknown[0]!r}; expected one of {tuple(all_kinds)}")
    examples: list[Example] = []
    for kind in kinds:
        rng = np.random.default_rng([seed, list(all_kinds).index(kind)])
        examples.extend(draw(rng, kind) for _ in range(n_per_kind))
    return examples
