"""World v2: textured shapes whose noun is visible in every interior patch.

v1's flat shapes told a circle from a square only at their edges, and the heatmap argmax lands in
an object's interior, so its nouns went ungrounded (model card). Here each noun is a shape *and*
an interior texture with a period of one latent patch, anchored to the image grid: every interior
4x4-pixel patch of a square is the same checked tile, of a triangle the same striped tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refam.toy.layout import lay_out
from refam.toy.scene_base import SceneBase
from refam.toy.scenes.world import BACKGROUND, COLOURS

__all__ = [
    "BACKGROUND",
    "BORDER",
    "BOX_GAP",
    "COLOURS",
    "EVAL_SEED",
    "GENERIC_NOUN",
    "NAMINGS",
    "NOUNS",
    "RELATIONS",
    "RELATION_AXIS",
    "ROW_LAYOUT_SHARE",
    "SIZES",
    "SIZE_RADII",
    "SPATIAL_MARGIN",
    "TEXTURES",
    "TEXTURE_PERIODS",
    "TRAIN_SEED",
    "VALIDATION_SEED",
    "dark",
    "Scene",
    "ToyObject",
    "sample_scene",
    "scene_from_seed",
]

# Three streams that never meet: the trainer draws from TRAIN_SEED, the operating point (σ, score)
# is chosen on VALIDATION_SEED, and every reported number and the CI test use EVAL_SEED. All differ
# from v1's seeds, so no v2 scene is a v1 scene by construction either.
TRAIN_SEED: int = 2
VALIDATION_SEED: int = 20_023
EVAL_SEED: int = 10_009

# Noun -> texture. Nouns, not texture adjectives: spaCy parses "the red striped one" with the noun
# phrase "the red", so adjective categories would be cut off before RefAM reads them.
TEXTURES: dict[str, str] = {
    "circle": "solid",
    "square": "checked",
    "triangle": "striped",
    "diamond": "dotted",
}
NOUNS: tuple[str, ...] = tuple(TEXTURES)
# Texture repeats per image side: 12 periods at 48 px is 4 px, one latent patch of the toy model
# (2x2 space-to-depth, then FLUX's 2x2 packing).
TEXTURE_PERIODS: int = 12
SIZES: tuple[str, ...] = ("small", "big")
# 3.6-5.0 latent patches across at 48 px: even a small diamond holds a whole interior patch.
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (0.15, 0.16), "big": (0.19, 0.21)}
BOX_GAP: float = 0.04
BORDER: float = 0.02
SPATIAL_MARGIN: float = 0.15
# Share of scenes whose objects stand in a left-to-right row, so that "in the middle" occurs.
ROW_LAYOUT_SHARE: float = 1.0 / 3.0

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
# Relation -> (coordinate, sign): sign * coordinate grows towards that side.
RELATION_AXIS: dict[str, tuple[str, int]] = {
    "left of": ("cx", -1),
    "right of": ("cx", 1),
    "above": ("cy", -1),
    "below": ("cy", 1),
}
GENERIC_NOUN = "shape"  # "colour" captions name objects as "a red shape"
# Caption namings: "full" ("red square"), "noun" ("square"), "colour" ("red shape"). Captions that
# name only one attribute force each word to carry its own attribute to the pixels.
NAMINGS: tuple[str, ...] = ("full", "noun", "colour")

_MAX_LAYOUT_TRIES = 400
_ROW_JITTER = 0.04


@dataclass(frozen=True)
class ToyObject:
    """One textured shape; ``cx``/``cy``/``radius`` are normalised to the image side."""

    noun: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float

    def __post_init__(self) -> None:
        if self.noun not in TEXTURES:
            raise ValueError(f"unknown noun {self.noun!r}; expected one of {NOUNS}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {SIZES}")

    @property
    def box(self) -> tuple[float, float, float, float]:
        r = self.radius
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def phrase(self, with_size: bool = False, naming: str = "full") -> str:
        """"red square", "big red square", "square" or "red shape" (see :data:`NAMINGS`)."""
        words = [self.size] if with_size else []
        if naming == "full":
            words += [self.colour, self.noun]
        elif naming == "noun":
            words.append(self.noun)
        elif naming == "colour":
            words += [self.colour, GENERIC_NOUN]
        else:
            raise ValueError(f"unknown naming {naming!r}; expected one of {NAMINGS}")
        return " ".join(words)


class Scene(SceneBase):
    """A world-v2 scene (``seed`` ``None`` for hand-built ones)."""

    object_type = ToyObject
    world_tag = "v2"


def scene_from_seed(seed: int, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """The scene determined by ``seed`` alone."""
    lo, hi = n_objects
    if not 0 <= lo <= hi:
        raise ValueError(f"n_objects must be an inclusive range (lo, hi) with 0 <= lo <= hi, got {n_objects}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(lo, hi + 1))
    row = n >= 2 and rng.random() < ROW_LAYOUT_SHARE
    bounds = np.array([SIZE_RADII[s] for s in SIZES])
    lay = lay_out(rng, n, bounds, len(NOUNS), len(COLOURS), border=BORDER, box_gap=BOX_GAP,
                  max_tries=_MAX_LAYOUT_TRIES, row=row, row_jitter=_ROW_JITTER, seed=seed)
    return Scene(lay.objects(ToyObject, NOUNS, tuple(COLOURS), SIZES), seed)


def sample_scene(rng: np.random.Generator, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """A random scene with an object count drawn from the inclusive range ``n_objects``."""
    return scene_from_seed(int(rng.integers(0, 2**63 - 1)), n_objects)


def dark(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The texture's second tone: the same hue at half brightness."""
    return tuple(int(math.floor(0.5 * c + 0.5)) for c in rgb)  # type: ignore[return-value]
