"""Toy world v2: textured shapes whose noun shows in every interior latent patch.

Same conventions as :mod:`refam.toy.scenes` (normalised geometry, exact masks, explicit RNGs), with
nouns bound to textures (circle solid, square checked, triangle striped, diamond dotted), five
referral kinds, and seeds kept apart for training, validation and evaluation.

Modules
-------
- :mod:`~refam.toy.scenes_v2.world`: colours, nouns, textures, objects, scenes, seeds.
- :mod:`~refam.toy.scenes_v2.drawing`: pixels and exact masks.
- :mod:`~refam.toy.scenes_v2.captions`: captions and training batches.
- :mod:`~refam.toy.scenes_v2.meaning`: the referral kinds and what a referral says.
- :mod:`~refam.toy.scenes_v2.parse`: a referral's meaning from its words.
- :mod:`~refam.toy.scenes_v2.resolver`: objects read off pixels; which satisfy a meaning.
- :mod:`~refam.toy.scenes_v2.referrals`: every verified referral, sampling, evaluation sets.
"""

from refam.toy.scenes_v2.captions import DEFAULT_NAMING_MIX, caption, training_batch
from refam.toy.scenes_v2.drawing import masks, render
from refam.toy.scenes_v2.meaning import ALL_KINDS, SIDES, Meaning
from refam.toy.scenes_v2.parse import parse_referral
from refam.toy.scenes_v2.referrals import (
    Referral,
    ToyExample,
    make_eval_set,
    referrals,
    sample_referral,
    verify,
)
from refam.toy.scenes_v2.resolver import resolve_meaning, see_objects
from refam.toy.scenes_v2.world import (
    COLOURS,
    EVAL_SEED,
    NAMINGS,
    NOUNS,
    TEXTURES,
    TRAIN_SEED,
    VALIDATION_SEED,
    Scene,
    ToyObject,
    sample_scene,
    scene_from_seed,
)

__all__ = [
    "ALL_KINDS",
    "COLOURS",
    "DEFAULT_NAMING_MIX",
    "EVAL_SEED",
    "NAMINGS",
    "NOUNS",
    "SIDES",
    "TEXTURES",
    "TRAIN_SEED",
    "VALIDATION_SEED",
    "Meaning",
    "Referral",
    "Scene",
    "ToyExample",
    "ToyObject",
    "caption",
    "make_eval_set",
    "masks",
    "parse_referral",
    "referrals",
    "render",
    "resolve_meaning",
    "sample_referral",
    "sample_scene",
    "scene_from_seed",
    "see_objects",
    "training_batch",
    "verify",
]
