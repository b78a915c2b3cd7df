"""Toy scenes of flat-coloured circles, squares and triangles, with captions and referring expressions.

Everything here exists so that a tiny text-to-image model can be trained on captions of these scenes
and the RefAM pipeline can then be checked end to end against *exact* ground truth: masks come from
the same analytic rasterisation rule as the rendered pixels, and every referring expression is
unambiguous by construction (and re-verified by an interpreter of its structured meaning).

Conventions
-----------
* Geometry is normalised: ``cx`` is the column and ``cy`` the row of an object's centre, both in
  [0, 1]; ``radius`` is the half-extent as a fraction of the image side. Rendering at a non-square
  size stretches the scene (a circle becomes an ellipse), which keeps masks exact at any size.
* A pixel (i, j) belongs to an object iff its centre ((j + 0.5) / W, (i + 0.5) / H) is inside the
  shape (boundary included). There is no anti-aliasing, so every pixel is background or exactly one
  object's colour, and objects never overlap.
* All randomness flows through an explicit :class:`numpy.random.Generator`; nothing touches global
  state. Training draws from :data:`TRAIN_SEED` and evaluation sets from :data:`EVAL_SEED`, a seed the
  trainer never uses, so evaluation scenes are held out.

Modules
-------
- :mod:`~refam.toy.scenes.world`: colours, shapes, sizes; objects, scenes and seeded sampling.
- :mod:`~refam.toy.scenes.drawing`: pixels and exact masks.
- :mod:`~refam.toy.scenes.captions`: captions and captioned training batches.
- :mod:`~refam.toy.scenes.resolver`: what a referral means, checked independently of its wording.
- :mod:`~refam.toy.scenes.referrals`: every unambiguous referral, sampling, evaluation sets.
"""

from refam.toy.scenes.captions import caption, training_batch
from refam.toy.scenes.drawing import masks, render
from refam.toy.scenes.referrals import ToyExample, make_eval_set, referrals, sample_referral
from refam.toy.scenes.resolver import ALL_KINDS, Referral, resolve
from refam.toy.scenes.world import (
    BACKGROUND,
    BORDER,
    BOX_GAP,
    COLOURS,
    EVAL_SEED,
    GENERIC_NOUN,
    NAMINGS,
    RELATIONS,
    SHAPES,
    SIDES,
    SIZE_RADII,
    SIZES,
    SPATIAL_MARGIN,
    TRAIN_SEED,
    VALIDATION_SEED,
    Scene,
    ToyObject,
    flip_lr,
    sample_scene,
    scene_from_seed,
    transpose,
)

__all__ = [
    "ALL_KINDS",
    "BACKGROUND",
    "BORDER",
    "BOX_GAP",
    "COLOURS",
    "EVAL_SEED",
    "GENERIC_NOUN",
    "NAMINGS",
    "RELATIONS",
    "SHAPES",
    "SIDES",
    "SIZES",
    "SIZE_RADII",
    "SPATIAL_MARGIN",
    "TRAIN_SEED",
    "VALIDATION_SEED",
    "Referral",
    "Scene",
    "ToyExample",
    "ToyObject",
    "caption",
    "flip_lr",
    "make_eval_set",
    "masks",
    "referrals",
    "render",
    "resolve",
    "sample_referral",
    "sample_scene",
    "scene_from_seed",
    "training_batch",
    "transpose",
]
