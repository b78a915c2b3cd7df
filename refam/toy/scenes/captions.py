"""Captions of toy scenes, and the captioned training batches the toy model learns from."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refam.toy.scenes.drawing import check_size, render_into
from refam.toy.scenes.world import NAMINGS, RELATION_AXIS, SPATIAL_MARGIN, Scene, sample_scene

__all__ = ["caption", "naming_shares", "training_batch"]


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
            for rel, (coord, sign) in RELATION_AXIS.items()
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


def naming_shares(mix: dict[str, float], namings: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``mix``'s namings and their shares, normalised; refused unless it maps some of ``namings``
    to non-negative shares."""
    if set(mix) - set(namings) or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(f"naming_mix must map some of {tuple(namings)} to non-negative shares, got {mix}")
    names = list(mix)
    shares = np.array([mix[k] for k in names], dtype=np.float64)
    return names, shares / shares.sum()


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
    check_size(height, width)
    names: list[str] = []
    shares = np.zeros(0)
    if naming_mix is not None:
        names, shares = naming_shares(naming_mix, NAMINGS)
    images = np.empty((batch, height, width, 3), dtype=np.uint8)
    captions = []
    for b in range(batch):
        scene = sample_scene(rng, n_objects)
        render_into(scene, images[b])
        naming = names[int(rng.choice(len(names), p=shares))] if names else "full"
        captions.append(caption(scene, rng, naming))
    return images, captions
