"""Resolve a :class:`Meaning` on a rendered scene: read each object's colour, noun and position off
its pixels and mask (never off the scene's description), and return every object that satisfies
the meaning. A referral is valid iff exactly its target comes back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refam.toy.scenes_v2.meaning import Meaning
from refam.toy.scenes_v2.world import COLOURS, RELATION_AXIS, SPATIAL_MARGIN

__all__ = ["SeenObject", "resolve_meaning", "see_objects"]

_NOUN_OF_PATTERN = {"plain": "circle", "checks": "square", "bands": "triangle", "spots": "diamond"}


@dataclass(frozen=True)
class SeenObject:
    colour: str
    noun: str
    cx: float  # centre of the mask's bounding box, normalised
    cy: float


def _pattern(dark: np.ndarray, inside: np.ndarray) -> str:
    """Name the dark-tone pattern of one object from its pixels."""
    share = dark[inside].mean()
    if share == 0.0:
        return "plain"
    if share < 0.375:
        return "spots"  # a quarter of each tile is dark
    # Bands are dark along whole rows: inside the object, no row mixes the two tones.
    rows = [dark[i][inside[i]] for i in range(dark.shape[0]) if inside[i].any()]
    return "bands" if all(r.all() or not r.any() for r in rows) else "checks"


def see_objects(image: np.ndarray, masks: np.ndarray) -> list[SeenObject]:
    """Each mask's object as the pixels show it."""
    height, width = image.shape[:2]
    pixels = image.astype(np.int32)
    seen = []
    for inside in masks:
        values = pixels[inside]
        brightness = values.sum(axis=1)
        # The brighter tone is the object's colour; the dark tone is the same hue at half brightness.
        base = values[brightness.argmax()]
        colour = next(name for name, rgb in COLOURS.items() if tuple(base) == rgb)
        dark = np.zeros(inside.shape, dtype=bool)
        dark[inside] = brightness < brightness.max()
        rows, cols = np.nonzero(inside)
        seen.append(
            SeenObject(
                colour=colour,
                noun=_NOUN_OF_PATTERN[_pattern(dark, inside)],
                cx=(cols.min() + cols.max() + 1) / 2 / width,
                cy=(rows.min() + rows.max() + 1) / 2 / height,
            )
        )
    return seen


def _clearly_first(objs: list[SeenObject], cands: list[int], coord: str, sign: int) -> list[int]:
    """The candidate ahead of every other one along ``sign * coord`` by the margin (or none)."""
    return [
        c
        for c in cands
        if all(
            sign * (getattr(objs[c], coord) - getattr(objs[o], coord)) >= SPATIAL_MARGIN for o in cands if o != c
        )
    ]


def resolve_meaning(meaning: Meaning, objs: list[SeenObject]) -> list[int]:
    """Indices of the objects that satisfy ``meaning`` (exactly one iff the referral is valid)."""
    k = meaning.kind
    with_colour = [i for i, o in enumerate(objs) if o.colour == meaning.colour]
    with_noun = [i for i, o in enumerate(objs) if o.noun == meaning.noun]
    if k == "colour":
        return with_colour
    if k == "noun":
        return with_noun
    if k == "colour_noun":
        # Each word alone must be ambiguous, or this would be a colour or noun referral.
        if len(with_colour) < 2 or len(with_noun) < 2:
            return []
        return [i for i in with_colour if i in with_noun]
    if k == "spatial":
        if len(with_noun) < 2:
            return []
        if meaning.relation == "middle":
            if len(with_noun) != 3:
                return []
            order = sorted(with_noun, key=lambda i: objs[i].cx)
            xs = [objs[i].cx for i in order]
            return [order[1]] if min(xs[1] - xs[0], xs[2] - xs[1]) >= SPATIAL_MARGIN else []
        return _clearly_first(objs, with_noun, "cx", -1 if meaning.relation == "left" else 1)
    if k == "relational":
        anchors = [i for i, o in enumerate(objs) if o.colour == meaning.anchor_colour and o.noun == meaning.anchor_noun]
        if len(anchors) != 1 or len(with_noun) < 2:  # the relation must be needed, not decorative
            return []
        a = anchors[0]
        coord, sign = RELATION_AXIS[meaning.relation]
        ahead = [i for i in with_noun if i != a and sign * (getattr(objs[i], coord) - getattr(objs[a], coord)) > 0]
        if len(ahead) != 1:
            return []
        gap = sign * (getattr(objs[ahead[0]], coord) - getattr(objs[a], coord))
        return ahead if gap >= SPATIAL_MARGIN else []
    raise ValueError(f"unknown referral kind {k!r}")
