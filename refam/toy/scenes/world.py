"""The toy world: its colours, shapes and sizes, the objects and scenes made of them, and how a scene is
drawn from a seed (see :mod:`refam.toy.scenes` for the geometry conventions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refam.toy.layout import lay_out
from refam.toy.scene_base import SceneBase

__all__ = [
    "BACKGROUND",
    "BORDER",
    "BOX_GAP",
    "COLOURS",
    "EVAL_SEED",
    "GENERIC_NOUN",
    "NAMINGS",
    "RELATIONS",
    "RELATION_AXIS",
    "SHAPES",
    "SIDES",
    "SIDE_AXIS",
    "SIZES",
    "SIZE_RADII",
    "SPATIAL_MARGIN",
    "TRAIN_SEED",
    "VALIDATION_SEED",
    "Scene",
    "ToyObject",
    "flip_lr",
    "sample_scene",
    "scene_from_seed",
    "transpose",
]

# The trainer draws from TRAIN_SEED; evaluation sets use EVAL_SEED, which training never touches,
# so the evaluation scenes are held out (coordinates are continuous, so no scene repeats by chance).
TRAIN_SEED: int = 0
EVAL_SEED: int = 10_007
# The release step chooses the toy's operating point on these scenes, which neither the trainer
# nor the reported numbers draw from.
VALIDATION_SEED: int = 20_011

# Saturated and far apart in hue so a tiny model separates them easily. No "pink": RefAM appends
# "pink" as an attention-magnet word, so it must never name a real object.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (150, 40, 190),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "big")
BACKGROUND: tuple[int, int, int] = (32, 32, 32)

# Half-extent ranges; the smallest big object is ~1.4x the largest small one so size words are
# visually unambiguous, and four big objects still pack (2 * 0.40 + 0.04 <= 0.96).
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (0.10, 0.12), "big": (0.17, 0.20)}
BOX_GAP: float = 0.04  # minimum Chebyshev gap between two objects' bounding boxes
BORDER: float = 0.02  # every bounding box lies within [BORDER, 1 - BORDER]
# Spatial words are only used when the comparison is clear by this much (normalised units).
SPATIAL_MARGIN: float = 0.15

SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

# Side/relation -> (coordinate, sign): sign * coordinate grows towards that side, so "more extreme"
# is always "larger" and one comparison serves all four directions.
SIDE_AXIS: dict[str, tuple[str, int]] = {
    "left": ("cx", -1),
    "right": ("cx", 1),
    "top": ("cy", -1),
    "bottom": ("cy", 1),
}
RELATION_AXIS: dict[str, tuple[str, int]] = {
    "left of": ("cx", -1),
    "right of": ("cx", 1),
    "above": ("cy", -1),
    "below": ("cy", 1),
}
GENERIC_NOUN = "shape"  # spatial referrals may compare all objects ("the leftmost shape")
# How captions name objects. "full" alone lets a model read an object's shape off its colour word
# (the text encoder is bidirectional, so "red" already carries "circle"), and its shape words go
# ungrounded; captions that name only shapes, or only colours, force each word to carry its own
# attribute to the pixels.
NAMINGS: tuple[str, ...] = ("full", "shape", "colour")

_MAX_LAYOUT_TRIES = 200


@dataclass(frozen=True)
class ToyObject:
    """One flat-coloured shape; ``cx``/``cy``/``radius`` are normalised (see the module docstring)."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {SIZES}")

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Normalised bounding box (x0, y0, x1, y1)."""
        r = self.radius
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    @property
    def area(self) -> float:
        """Analytic area as a fraction of the image (pixel count ~ area * H * W at any size)."""
        r = self.radius
        return {"circle": math.pi * r * r, "square": 4.0 * r * r, "triangle": 2.0 * r * r}[self.shape]

    def phrase(self, with_size: bool = False, naming: str = "full") -> str:
        """Noun phrase without article: "red circle", "big red circle", "circle" or "red shape".

        ``naming`` is "full" (colour and shape), "shape" (shape only) or "colour" (colour with the
        generic noun), see :data:`NAMINGS`.
        """
        words = [self.size] if with_size else []
        if naming == "full":
            words += [self.colour, self.shape]
        elif naming == "shape":
            words.append(self.shape)
        elif naming == "colour":
            words += [self.colour, GENERIC_NOUN]
        else:
            raise ValueError(f"unknown naming {naming!r}; expected one of {NAMINGS}")
        return " ".join(words)


class Scene(SceneBase):
    """A world-v1 scene. ``seed`` regenerates it via ``scene_from_seed(seed, n_objects)`` with the same
    object-count range; it is ``None`` for hand-built or derived (flipped, transposed) scenes."""

    object_type = ToyObject


def flip_lr(scene: Scene) -> Scene:
    """Mirror left-right (triangles are symmetric, so render(flip_lr(s)) == render(s)[:, ::-1])."""
    return Scene(tuple(_replace(o, cx=1.0 - o.cx) for o in scene.objects), None)


def transpose(scene: Scene) -> Scene:
    """Swap the x and y centre coordinates, keeping object order.

    Circles and squares map exactly (render(transpose(s), W, H) == render(s, H, W).transpose(1, 0, 2));
    triangles keep pointing up rather than turning into left-pointing ones, so use this to turn
    horizontal layouts into vertical ones, not as an exact image transform for triangles.
    """
    return Scene(tuple(_replace(o, cx=o.cy, cy=o.cx) for o in scene.objects), None)


def _replace(obj: ToyObject, **changes: float) -> ToyObject:
    return ToyObject(**{**vars(obj), **changes})


def scene_from_seed(seed: int, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """The scene determined by ``seed`` alone (what :func:`sample_scene` returns for that seed)."""
    lo, hi = n_objects
    if not 0 <= lo <= hi:
        raise ValueError(f"n_objects must be an inclusive range (lo, hi) with 0 <= lo <= hi, got {n_objects}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(lo, hi + 1))
    bounds = np.array([SIZE_RADII[s] for s in SIZES])  # [n_sizes, (min, max)]
    lay = lay_out(rng, n, bounds, len(SHAPES), len(COLOURS), border=BORDER, box_gap=BOX_GAP,
                  max_tries=_MAX_LAYOUT_TRIES, seed=seed)
    return Scene(lay.objects(ToyObject, SHAPES, tuple(COLOURS), SIZES), seed)


def sample_scene(rng: np.random.Generator, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """A random scene with an object count drawn from the inclusive range ``n_objects``."""
    return scene_from_seed(int(rng.integers(0, 2**63 - 1)), n_objects)
