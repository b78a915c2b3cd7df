"""Captions of world-v2 scenes and the captioned training batches the v2 toy model learns from.

The sentence grammar is v1's (:func:`refam.toy.scenes.captions.caption` reads only an object's
``phrase`` and centre); what differs is the naming mix, which v2 trains with from the first step.
"""

from __future__ import annotations

import numpy as np

from refam.toy.scenes.captions import caption as _caption
from refam.toy.scenes.captions import naming_shares
from refam.toy.scenes.drawing import check_size
from refam.toy.scenes_v2.drawing import render_into
from refam.toy.scenes_v2.world import NAMINGS, Scene, sample_scene

__all__ = ["DEFAULT_NAMING_MIX", "caption", "training_batch"]

# Half the captions name colour and noun; the rest name only one, so neither word can stand in for
# the other through the bidirectional text encoder (v1's nouns were carried by its colour words).
DEFAULT_NAMING_MIX: dict[str, float] = {"full": 0.5, "noun": 0.3, "colour": 0.2}


def caption(scene: Scene, rng: np.random.Generator, naming: str = "full") -> str:
    """"a red circle, a big blue square and a yellow triangle" (order, sizes and positions vary)."""
    if naming not in NAMINGS:
        raise ValueError(f"unknown naming {naming!r}; expected one of {NAMINGS}")
    return _caption(scene, rng, naming)


def training_batch(
    rng: np.random.Generator,
    batch: int,
    height: int = 48,
    width: int = 48,
    n_objects: tuple[int, int] = (1, 4),
    naming_mix: dict[str, float] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``batch`` random scenes as uint8 ``[B, H, W, 3]`` images and their captions."""
    check_size(height, width)
    names, shares = naming_shares(DEFAULT_NAMING_MIX if naming_mix is None else naming_mix, NAMINGS)
    images = np.empty((batch, height, width, 3), dtype=np.uint8)
    captions = []
    for b in range(batch):
        scene = sample_scene(rng, n_objects)
        render_into(scene, images[b])
        captions.append(caption(scene, rng, names[int(rng.choice(len(names), p=shares))]))
    return images, captions
