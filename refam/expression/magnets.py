"""The attention magnets an expression is tokenized with, for each of Table 5's variants.

Torch-free: the words are decided here; the vectors of ``random_vectors`` are drawn where the
text encoder's embedding table is (:mod:`refam.magnet_vectors`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from refam.expression.word_lists import STOP_WORDS
from refam.variants import MAGNET_VARIANTS, check_choice

__all__ = ["VECTOR_PLACEHOLDER", "MagnetPlan", "magnet_plan"]

#: The word a random vector stands in for while tokenizing: one T5 token, so each vector takes
#: exactly one position; its embedding is replaced before the encoder sees it.
VECTOR_PLACEHOLDER = "and"


@dataclass(frozen=True)
class MagnetPlan:
    """The magnet words to append, and how many of the first of them are random vectors."""

    words: tuple[str, ...]
    vectors: int = 0  # the first ``vectors`` magnet words are placeholders of random vectors
    seed: int = 0  # draws the random stop words / vectors


def magnet_plan(variant: str, magnets: Sequence[str], seed: int = 0) -> MagnetPlan:
    """Table 5's variants, built from the configured ``magnets`` (the paper's: four stop words and
    the colour "pink").

    ``default``: the magnets as given. ``stop_words``: only their stop words (the "stop words" row).
    ``random_stop_words``: each stop-word magnet replaced by a stop word drawn with ``seed`` from
    the paper's list, the other magnets kept. ``random_vectors``: each stop-word magnet replaced by
    a random input embedding (drawn with ``seed`` at the norm of the encoder's real token
    embeddings), the other magnets kept. ``none``: no magnets (the "none" row).
    """
    check_choice("magnet variant", variant, MAGNET_VARIANTS)
    magnets = tuple(magnets)
    stops = [m for m in magnets if m.lower() in STOP_WORDS]
    others = tuple(m for m in magnets if m.lower() not in STOP_WORDS)
    if variant == "none":
        return MagnetPlan(())
    if variant == "default":
        return MagnetPlan(magnets)
    if variant == "stop_words":
        return MagnetPlan(tuple(stops))
    # Table 5 compares random stop words (57.5 J&F) and random vectors (56.2) with "stop words +
    # color" (57.6) and "stop words" (56.8): "We then examine whether the specific choice of stop
    # words matters. Sampling five different stop-word sets ... replacing stop words with random
    # vectors" — the stop words are what is replaced, so the colour magnet stays in both.
    if variant == "random_stop_words":
        drawn = random.Random(seed).sample(sorted(STOP_WORDS), len(stops))
        return MagnetPlan((*drawn, *others), seed=seed)
    return MagnetPlan((VECTOR_PLACEHOLDER,) * len(stops) + others, vectors=len(stops), seed=seed)
