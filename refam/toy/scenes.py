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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

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

# The trainer draws from TRAIN_SEED; evaluation sets use EVAL_SEED, which training never touches,
# so the evaluation scenes are held out (coordinates are continuous, so no scene repeats by chance).
TRAIN_SEED: int = 0
EVAL_SEED: int = 10_007

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

ALL_KINDS: tuple[str, ...] = ("colour", "colour_shape", "spatial", "relational")
SIDES: tuple[str, ...] = ("left", "right", "top", "bottom")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

# Side/relation -> (coordinate, sign): sign * coordinate grows towards that side, so "more extreme"
# is always "larger" and one comparison serves all four directions.
_SIDE_AXIS: dict[str, tuple[str, int]] = {
    "left": ("cx", -1),
    "right": ("cx", 1),
    "top": ("cy", -1),
    "bottom": ("cy", 1),
}
_RELATION_AXIS: dict[str, tuple[str, int]] = {
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
_GENERIC_SPATIAL_P = 0.25  # share of sampled spatial referrals that use the generic noun

_COLOUR_TEMPLATES = ("the {colour} shape", "the {colour} one", "the {colour} object")
_SPATIAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "left": ("the {noun} on the left", "the leftmost {noun}"),
    "right": ("the {noun} on the right", "the rightmost {noun}"),
    "top": ("the top {noun}", "the {noun} at the top"),
    "bottom": ("the bottom {noun}", "the {noun} at the bottom"),
}
_PLACEMENT_CANDIDATES = 256
_LAYOUTS_PER_DRAW = 20
_MAX_LAYOUT_TRIES = 200


# --------------------------------------------------------------------------------------------------
# Scene model
# --------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Scene:
    """Objects (stored as a tuple so scenes are immutable and comparable) and the seed that made them.

    ``seed`` regenerates the scene via ``scene_from_seed(seed, n_objects)`` with the same object-count
    range; it is ``None`` for hand-built or derived (flipped, transposed) scenes.
    """

    objects: tuple[ToyObject, ...]
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "objects": [vars(o).copy() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(tuple(ToyObject(**o) for o in data["objects"]), data.get("seed"))


@dataclass(frozen=True)
class Referral:
    """A referring expression for object ``target`` of a scene.

    ``relation`` is the side ("left", ..., for spatial) or relation ("left of", ..., for relational);
    ``anchor`` is the anchor object's index for relational referrals. Both are None otherwise.
    ``noun`` is the head noun: a shape name, or "shape" for generic spatial referrals.
    """

    text: str
    kind: str
    target: int
    relation: str | None = None
    anchor: int | None = None
    noun: str | None = None


class ToyExample(NamedTuple):
    scene: Scene
    referral: Referral

    def target_mask(self, height: int = 48, width: int = 48) -> np.ndarray:
        return masks(self.scene, height, width)[self.referral.target]


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


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def scene_from_seed(seed: int, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """The scene determined by ``seed`` alone (what :func:`sample_scene` returns for that seed)."""
    lo, hi = n_objects
    if not 0 <= lo <= hi:
        raise ValueError(f"n_objects must be an inclusive range (lo, hi) with 0 <= lo <= hi, got {n_objects}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(lo, hi + 1))
    bounds = np.array([SIZE_RADII[s] for s in SIZES])  # [n_sizes, (min, max)]
    for attempt in range(_MAX_LAYOUT_TRIES):
        # Keep the drawn sizes through several failed layouts: resampling them at every failure
        # would favour small objects in crowded scenes (four big ones place ~1 time in 5).
        if attempt % _LAYOUTS_PER_DRAW == 0:
            size_idx = rng.integers(0, len(SIZES), n)
            radii = bounds[size_idx, 0] + rng.random(n) * (bounds[size_idx, 1] - bounds[size_idx, 0])
            shape_idx = rng.integers(0, len(SHAPES), n)
            colour_idx = rng.integers(0, len(COLOURS), n)
        centres = np.empty((n, 2))
        # Big objects first: they are the hard ones to fit, the small ones slot in around them.
        order = np.argsort(-radii, kind="stable")
        for m, k in enumerate(order):
            r = radii[k]
            # A whole batch of candidate centres per draw: vectorised rejection, first survivor wins.
            cand = BORDER + r + rng.random((_PLACEMENT_CANDIDATES, 2)) * (1.0 - 2.0 * (BORDER + r))
            prev = order[:m]
            # Chebyshev gap between boxes: apart along either axis means no shared pixel centre.
            gap = np.abs(cand[:, None, :] - centres[prev][None]).max(axis=-1) - radii[prev][None] - r
            ok = np.flatnonzero((gap >= BOX_GAP).all(axis=1))
            if ok.size == 0:
                break  # dead end: start a fresh layout
            centres[k] = cand[ok[0]]
        else:
            objects = tuple(
                ToyObject(
                    shape=SHAPES[int(shape_idx[k])],
                    colour=tuple(COLOURS)[int(colour_idx[k])],
                    size=SIZES[int(size_idx[k])],
                    cx=float(centres[k, 0]),
                    cy=float(centres[k, 1]),
                    radius=float(radii[k]),
                )
                for k in range(n)
            )
            return Scene(objects, seed)
    raise RuntimeError(
        f"could not place {n} objects without overlap in {_MAX_LAYOUT_TRIES} layouts (seed {seed})"
    )


def sample_scene(rng: np.random.Generator, n_objects: tuple[int, int] = (2, 4)) -> Scene:
    """A random scene with an object count drawn from the inclusive range ``n_objects``."""
    return scene_from_seed(int(rng.integers(0, 2**63 - 1)), n_objects)


# --------------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _pixel_centres(n: int) -> np.ndarray:
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    centres.flags.writeable = False  # shared across calls through the cache
    return centres


def _window(lo: float, hi: float, n: int) -> tuple[int, int]:
    # Pixel indices whose centres could fall in [lo, hi], with one pixel of slack each side; the exact
    # test runs on the window, so the slack only costs time, never correctness.
    start = max(math.floor(lo * n - 0.5), 0)
    stop = min(math.ceil(hi * n - 0.5) + 1, n)
    return start, max(stop, start)


def _rasterise(obj: ToyObject, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """(rows, cols, inside): the object's pixels as a bool array over a window of the image."""
    x0, y0, x1, y1 = obj.box
    c0, c1 = _window(x0, x1, width)
    r0, r1 = _window(y0, y1, height)
    # Slices of one cached grid: a pixel's coordinate never depends on the window it is seen through.
    dx = _pixel_centres(width)[c0:c1][None, :] - obj.cx
    dy = _pixel_centres(height)[r0:r1][:, None] - obj.cy
    r = obj.radius
    if obj.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif obj.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # upward isoceles triangle: apex (cx, cy - r), base from (cx -/+ r, cy + r)
        inside = (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
    return slice(r0, r1), slice(c0, c1), inside


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")


def render(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """The scene as an ``[height, width, 3]`` uint8 image."""
    _check_size(height, width)
    image = np.empty((height, width, 3), dtype=np.uint8)
    _render_into(scene, image)
    return image


@lru_cache(maxsize=64)
def _background(height: int, width: int) -> np.ndarray:
    # Copying a cached canvas is ~10x faster than broadcasting a 3-tuple into a fresh one.
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    canvas.flags.writeable = False
    return canvas


_COLOUR_VALUES: dict[str, np.ndarray] = {name: np.array(rgb, dtype=np.uint8) for name, rgb in COLOURS.items()}


def _render_into(scene: Scene, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    np.copyto(image, _background(height, width))
    for obj in scene.objects:
        rows, cols, inside = _rasterise(obj, height, width)
        np.copyto(image[rows, cols], _COLOUR_VALUES[obj.colour], where=inside[..., None])


def masks(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """Exact per-object masks, ``[n_objects, height, width]`` bool, same rule as :func:`render`."""
    _check_size(height, width)
    out = np.zeros((len(scene.objects), height, width), dtype=bool)
    for k, obj in enumerate(scene.objects):
        rows, cols, inside = _rasterise(obj, height, width)
        out[k, rows, cols] = inside
    return out


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _ordered_clearly(scene: Scene, coord: str) -> list[int] | None:
    """Indices sorted along ``coord`` if consecutive objects are SPATIAL_MARGIN apart, else None."""
    order = sorted(range(len(scene)), key=lambda k: getattr(scene.objects[k], coord))
    values = [getattr(scene.objects[k], coord) for k in order]
    if all(b - a >= SPATIAL_MARGIN for a, b in zip(values, values[1:], strict=False)):
        return order
    return None


_POSITION_WORDS = {
    ("cx", 2): ("on the left", "on the right"),
    ("cx", 3): ("on the left", "in the middle", "on the right"),
    ("cy", 2): ("at the top", "at the bottom"),
    ("cy", 3): ("at the top", "in the middle", "at the bottom"),
}


def caption(scene: Scene, rng: np.random.Generator, naming: str = "full") -> str:
    """A lower-case sentence naming every object, e.g. "a red circle, a big blue square and a yellow triangle".

    ``naming`` chooses the words for each object (:data:`NAMINGS`): "shape" gives "a circle, a big
    square and a triangle", "colour" gives "a red shape, a big blue shape and a yellow shape".

    Order is left-to-right half the time and random otherwise; sizes are mentioned for none, all or
    some objects. A minority of captions of two or three clearly separated objects carry positions
    ("... on the left", "... above ...") so the spatial words of referring expressions occur in training.
    """
    n = len(scene)
    if n == 0:
        return "nothing"
    size_mode = rng.random()
    if size_mode < 0.5:
        with_size = [False] * n
    elif size_mode < 0.75:
        with_size = [True] * n
    else:
        with_size = [bool(v) for v in rng.random(n) < 0.5]
    phrase = [scene.objects[k].phrase(with_size[k], naming) for k in range(n)]

    style = rng.random()
    if n == 2 and style < 0.08:
        # Relational caption: "a red circle left of a blue square" / "... above ...".
        first, second = (int(v) for v in rng.permutation(2))
        a, b = scene.objects[first], scene.objects[second]
        options = [
            rel
            for rel, (coord, sign) in _RELATION_AXIS.items()
            if sign * (getattr(a, coord) - getattr(b, coord)) >= SPATIAL_MARGIN
        ]
        if options:
            rel = options[int(rng.integers(len(options)))]
            return f"a {phrase[first]} {rel} a {phrase[second]}"
    elif n in (2, 3) and style < 0.22:
        # Positional caption: "a red circle on the left and a blue square on the right".
        coords = [c for c in ("cx", "cy") if _ordered_clearly(scene, c) is not None]
        if coords:
            coord = coords[int(rng.integers(len(coords)))]
            order = _ordered_clearly(scene, coord)
            assert order is not None
            words = dict(zip(order, _POSITION_WORDS[(coord, n)], strict=True))
            mention = order if rng.random() < 0.5 else [int(v) for v in rng.permutation(n)]
            return _join([f"a {phrase[k]} {words[k]}" for k in mention])

    if rng.random() < 0.5:
        order = sorted(range(n), key=lambda k: scene.objects[k].cx)
    else:
        order = [int(v) for v in rng.permutation(n)]
    seen: set[str] = set()
    parts = []
    for k in order:
        # "another" keeps identical phrases natural: "a red circle and another red circle".
        parts.append(("another " if phrase[k] in seen else "a ") + phrase[k])
        seen.add(phrase[k])
    return _join(parts)


# --------------------------------------------------------------------------------------------------
# Referring expressions
# --------------------------------------------------------------------------------------------------


def _signed(obj: ToyObject, coord: str, sign: int) -> float:
    return sign * getattr(obj, coord)


def _resolve_colour(scene: Scene, colour: str) -> list[int]:
    return [k for k, o in enumerate(scene.objects) if o.colour == colour]


def _resolve_colour_shape(scene: Scene, colour: str, shape: str) -> list[int]:
    # Only meaningful when colour alone is ambiguous; otherwise it would just be a "colour" referral.
    if len(_resolve_colour(scene, colour)) < 2:
        return []
    return [k for k, o in enumerate(scene.objects) if o.colour == colour and o.shape == shape]


def _resolve_spatial(scene: Scene, noun: str, side: str) -> list[int]:
    coord, sign = _SIDE_AXIS[side]
    cands = [k for k, o in enumerate(scene.objects) if noun in (GENERIC_NOUN, o.shape)]
    if len(cands) < 2:  # with a single candidate the noun alone would do
        return []
    objs = scene.objects
    return [
        c
        for c in cands
        if all(
            _signed(objs[c], coord, sign) - _signed(objs[o], coord, sign) >= SPATIAL_MARGIN
            for o in cands
            if o != c
        )
    ]


def _resolve_relational(
    scene: Scene, noun: str, relation: str, anchor_colour: str, anchor_shape: str
) -> list[int]:
    objs = scene.objects
    anchors = [k for k, o in enumerate(objs) if o.colour == anchor_colour and o.shape == anchor_shape]
    if len(anchors) != 1:
        return []
    anchor = anchors[0]
    if sum(o.shape == noun for o in objs) < 2:  # the relation must be needed, not decorative
        return []
    coord, sign = _RELATION_AXIS[relation]
    a = _signed(objs[anchor], coord, sign)
    on_side = [
        k for k, o in enumerate(objs) if k != anchor and o.shape == noun and _signed(o, coord, sign) > a
    ]
    if len(on_side) != 1 or _signed(objs[on_side[0]], coord, sign) - a < SPATIAL_MARGIN:
        return []
    return on_side


def resolve(scene: Scene, referral: Referral) -> list[int]:
    """Indices of the objects that satisfy ``referral``'s structured meaning (one iff it is valid).

    Interprets ``kind``/``noun``/``relation``/``anchor`` rather than the text; ``target`` is ignored,
    so this is an independent check of what the constructor claimed.
    """
    objs = scene.objects
    if referral.kind == "colour":
        return _resolve_colour(scene, objs[referral.target].colour)
    if referral.kind == "colour_shape":
        t = objs[referral.target]
        return _resolve_colour_shape(scene, t.colour, t.shape)
    if referral.kind == "spatial":
        assert referral.noun is not None and referral.relation is not None
        return _resolve_spatial(scene, referral.noun, referral.relation)
    if referral.kind == "relational":
        assert referral.noun is not None and referral.relation is not None and referral.anchor is not None
        a = objs[referral.anchor]
        return _resolve_relational(scene, referral.noun, referral.relation, a.colour, a.shape)
    raise ValueError(f"unknown referral kind {referral.kind!r}; expected one of {ALL_KINDS}")


def _pick(templates: Sequence[str], rng: np.random.Generator | None) -> str:
    # Without an rng the first template is the canonical wording.
    return templates[0] if rng is None else templates[int(rng.integers(len(templates)))]


def _referrals_of_kind(scene: Scene, kind: str, rng: np.random.Generator | None) -> list[Referral]:
    objs = scene.objects
    found: list[Referral] = []
    if kind == "colour":
        for colour in COLOURS:
            hits = _resolve_colour(scene, colour)
            if len(hits) == 1:
                found.append(Referral(_pick(_COLOUR_TEMPLATES, rng).format(colour=colour), kind, hits[0]))
    elif kind == "colour_shape":
        for colour in COLOURS:
            for shape in SHAPES:
                hits = _resolve_colour_shape(scene, colour, shape)
                if len(hits) == 1:
                    found.append(Referral(f"the {colour} {shape}", kind, hits[0], noun=shape))
    elif kind == "spatial":
        for noun in (*SHAPES, GENERIC_NOUN):
            for side in SIDES:
                hits = _resolve_spatial(scene, noun, side)
                if len(hits) == 1:
                    text = _pick(_SPATIAL_TEMPLATES[side], rng).format(noun=noun)
                    found.append(Referral(text, kind, hits[0], relation=side, noun=noun))
    elif kind == "relational":
        for anchor, a in enumerate(objs):
            for noun in SHAPES:
                for relation in RELATIONS:
                    hits = _resolve_relational(scene, noun, relation, a.colour, a.shape)
                    if len(hits) == 1:
                        text = f"the {noun} {relation} the {a.colour} {a.shape}"
                        found.append(
                            Referral(text, kind, hits[0], relation=relation, anchor=anchor, noun=noun)
                        )
    else:
        raise ValueError(f"unknown referral kind {kind!r}; expected one of {ALL_KINDS}")
    for ref in found:  # belt and braces: the structured meaning must pick out exactly the target
        if resolve(scene, ref) != [ref.target]:
            raise AssertionError(f"ambiguous referral {ref} in {scene}")
    return found


def referrals(
    scene: Scene, kinds: Iterable[str] = ALL_KINDS, rng: np.random.Generator | None = None
) -> list[Referral]:
    """Every valid referral of the given kinds, in a fixed order.

    Wording is canonical (first template) without ``rng``; with one, templates are drawn at random.
    """
    return [ref for kind in kinds for ref in _referrals_of_kind(scene, kind, rng)]


def sample_referral(
    rng: np.random.Generator, kind: str, n_objects: tuple[int, int] = (2, 4), max_tries: int = 2000
) -> tuple[Scene, Referral]:
    """Rejection-sample a scene until it admits a referral of ``kind``, then pick one at random."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown referral kind {kind!r}; expected one of {ALL_KINDS}")
    # Decided up front so the generic/shape-specific mix does not depend on how often each occurs.
    generic = kind == "spatial" and rng.random() < _GENERIC_SPATIAL_P
    for _ in range(max_tries):
        scene = sample_scene(rng, n_objects)
        found = _referrals_of_kind(scene, kind, rng)
        if kind == "spatial":
            found = [r for r in found if (r.noun == GENERIC_NOUN) == generic]
        if found:
            return scene, found[int(rng.integers(len(found)))]
    raise RuntimeError(
        f"no {kind!r} referral found in {max_tries} sampled scenes with n_objects={n_objects}; "
        "the kind may be unsatisfiable for that object count"
    )


def make_eval_set(
    seed: int = EVAL_SEED,
    n_per_kind: int = 50,
    kinds: Sequence[str] = ALL_KINDS,
    n_objects: tuple[int, int] = (2, 4),
) -> list[ToyExample]:
    """``n_per_kind`` (scene, referral) examples per kind, deterministic in ``seed``.

    Each kind has its own stream keyed by its position in ALL_KINDS, so asking for a subset of kinds
    (or more examples of one) leaves the others' examples unchanged.
    """
    examples: list[ToyExample] = []
    for kind in kinds:
        if kind not in ALL_KINDS:
            raise ValueError(f"unknown referral kind {kind!r}; expected one of {ALL_KINDS}")
        rng = np.random.default_rng([seed, ALL_KINDS.index(kind)])
        examples.extend(ToyExample(*sample_referral(rng, kind, n_objects)) for _ in range(n_per_kind))
    return examples


# --------------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------------


def training_batch(
    rng: np.random.Generator,
    batch: int,
    height: int = 48,
    width: int = 48,
    n_objects: tuple[int, int] = (1, 4),
    naming_mix: dict[str, float] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``batch`` random scenes as uint8 ``[B, H, W, 3]`` images and their captions.

    Single-object scenes are included by default: they tie each colour and shape word to pixels with
    no competing object, which a tiny model learns from much faster. ``naming_mix`` maps
    :data:`NAMINGS` to caption shares (normalised); without it every caption is "full" and ``rng`` is
    drawn exactly as before the option existed, so earlier training runs replay unchanged.
    """
    _check_size(height, width)
    names: list[str] = []
    shares = np.zeros(0)
    if naming_mix is not None:
        unknown = set(naming_mix) - set(NAMINGS)
        if unknown or not naming_mix or min(naming_mix.values()) < 0 or sum(naming_mix.values()) <= 0:
            raise ValueError(f"naming_mix must map some of {NAMINGS} to non-negative shares, got {naming_mix}")
        names = list(naming_mix)
        shares = np.array([naming_mix[k] for k in names], dtype=np.float64)
        shares /= shares.sum()
    images = np.empty((batch, height, width, 3), dtype=np.uint8)
    captions = []
    for b in range(batch):
        scene = sample_scene(rng, n_objects)
        _render_into(scene, images[b])
        naming = names[int(rng.choice(len(names), p=shares))] if names else "full"
        captions.append(caption(scene, rng, naming))
    return images, captions
