"""Referring expressions for world-v2 scenes: every unambiguous referral of a scene, random ones,
and the evaluation sets.

A referral is kept only when three readings agree: the generator's (on the scene's description),
:func:`parse_referral`'s (on the words) and :func:`resolve_meaning`'s on what
:func:`see_objects` reads off the rendered pixels and masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from refam.toy.eval_sets import per_kind_examples
from refam.toy.scenes_v2.drawing import masks, render
from refam.toy.scenes_v2.meaning import ALL_KINDS, SIDES, Meaning
from refam.toy.scenes_v2.parse import parse_referral
from refam.toy.scenes_v2.resolver import SeenObject, resolve_meaning, see_objects
from refam.toy.scenes_v2.world import COLOURS, EVAL_SEED, NOUNS, RELATIONS, Scene, sample_scene

__all__ = ["Referral", "ToyExample", "make_eval_set", "referrals", "sample_referral", "verify"]

_TEMPLATES: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("colour", None): ("the {colour} one", "the {colour} shape"),
    ("noun", None): ("the {noun}",),
    ("colour_noun", None): ("the {colour} {noun}",),
    ("spatial", "left"): ("the {noun} on the left", "the left {noun}"),
    ("spatial", "right"): ("the {noun} on the right", "the right {noun}"),
    ("spatial", "middle"): ("the {noun} in the middle",),
    ("relational", None): ("the {noun} {relation} the {anchor_colour} {anchor_noun}",),
}
_RENDER_SIZE = 48  # pixels the resolver reads; one texture tile is 4x4 of them


@dataclass(frozen=True)
class Referral:
    """A referring expression ``text`` for object ``target``; ``meaning`` is what it says."""

    text: str
    kind: str
    target: int
    meaning: Meaning


class ToyExample(NamedTuple):
    scene: Scene
    referral: Referral

    def target_mask(self, height: int = 48, width: int = 48) -> np.ndarray:
        return masks(self.scene, height, width)[self.referral.target]


def _described(scene: Scene) -> list[SeenObject]:
    return [SeenObject(o.colour, o.noun, o.cx, o.cy) for o in scene.objects]


def _meanings(kind: str) -> Iterable[Meaning]:
    if kind == "colour":
        yield from (Meaning(kind, colour=c) for c in COLOURS)
    elif kind == "noun":
        yield from (Meaning(kind, noun=n) for n in NOUNS)
    elif kind == "colour_noun":
        yield from (Meaning(kind, colour=c, noun=n) for c in COLOURS for n in NOUNS)
    elif kind == "spatial":
        yield from (Meaning(kind, noun=n, relation=s) for n in NOUNS for s in SIDES)
    elif kind == "relational":
        yield from (
            Meaning(kind, noun=n, relation=r, anchor_colour=c, anchor_noun=a)
            for n in NOUNS
            for r in RELATIONS
            for c in COLOURS
            for a in NOUNS
        )
    else:
        raise ValueError(f"unknown referral kind {kind!r}; expected one of {ALL_KINDS}")


def _wording(meaning: Meaning, rng: np.random.Generator | None) -> str:
    key = (meaning.kind, meaning.relation if meaning.kind == "spatial" else None)
    templates = _TEMPLATES[key]
    # Without an rng the first template is the canonical wording.
    template = templates[0] if rng is None else templates[int(rng.integers(len(templates)))]
    return template.format(**vars(meaning))


def verify(scene: Scene, referral: Referral, image: np.ndarray | None = None) -> bool:
    """Whether the words and the pixels both single out exactly ``referral.target``."""
    if image is None:
        image = render(scene, _RENDER_SIZE, _RENDER_SIZE)
    return _agrees(referral, _seen(scene, image))


def _seen(scene: Scene, image: np.ndarray) -> list[SeenObject]:
    return see_objects(image, masks(scene, *image.shape[:2]))


def _agrees(referral: Referral, seen: list[SeenObject]) -> bool:
    """The parser reads back the intended meaning, and it picks out exactly the target on the pixels."""
    if parse_referral(referral.text) != referral.meaning:
        return False
    return resolve_meaning(referral.meaning, seen) == [referral.target]


def referrals(
    scene: Scene, kinds: Iterable[str] = ALL_KINDS, rng: np.random.Generator | None = None
) -> list[Referral]:
    """Every verified referral of the given kinds, in a fixed order (canonical wording without
    ``rng``). A referral whose comparison sits within a pixel of the spatial margin can read
    differently off the pixels than off the description; it is dropped, never kept ambiguous."""
    described = _described(scene)
    seen = None  # read off the pixels once, for the first candidate, then shared by every check
    found = []
    for kind in kinds:
        for meaning in _meanings(kind):
            hits = resolve_meaning(meaning, described)
            if len(hits) != 1:
                continue
            if seen is None:
                seen = _seen(scene, render(scene, _RENDER_SIZE, _RENDER_SIZE))
            ref = Referral(_wording(meaning, rng), kind, hits[0], meaning)
            if _agrees(ref, seen):
                found.append(ref)
    return found


def sample_referral(
    rng: np.random.Generator, kind: str, n_objects: tuple[int, int] = (2, 4), max_tries: int = 2000
) -> tuple[Scene, Referral]:
    """Rejection-sample a scene until it admits a referral of ``kind``, then pick one at random."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown referral kind {kind!r}; expected one of {ALL_KINDS}")
    for _ in range(max_tries):
        scene = sample_scene(rng, n_objects)
        found = referrals(scene, (kind,), rng)
        if found:
            return scene, found[int(rng.integers(len(found)))]
    raise RuntimeError(f"no {kind!r} referral found in {max_tries} scenes with n_objects={n_objects}")


def make_eval_set(
    seed: int = EVAL_SEED, n_per_kind: int = 50, kinds: Sequence[str] = ALL_KINDS, n_objects: tuple[int, int] = (2, 4)
) -> list[ToyExample]:
    """``n_per_kind`` (scene, referral) examples per kind, deterministic in ``seed``; each kind has
    its own stream (:func:`refam.toy.eval_sets.per_kind_examples`)."""
    return per_kind_examples(
        seed, n_per_kind, kinds, ALL_KINDS, lambda rng, kind: ToyExample(*sample_referral(rng, kind, n_objects))
    )
