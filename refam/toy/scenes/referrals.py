"""Referring expressions for toy scenes: every unambiguous referral of a scene, random ones for
sampling, and the held-out evaluation sets. Each is re-verified by :func:`resolve`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from refam.toy.eval_sets import per_kind_examples
from refam.toy.scenes.drawing import masks
from refam.toy.scenes.resolver import (
    ALL_KINDS,
    Referral,
    resolve,
    resolve_colour,
    resolve_colour_shape,
    resolve_relational,
    resolve_spatial,
)
from refam.toy.scenes.world import (
    COLOURS,
    EVAL_SEED,
    GENERIC_NOUN,
    RELATIONS,
    SHAPES,
    SIDES,
    Scene,
    sample_scene,
)

__all__ = ["ToyExample", "make_eval_set", "referrals", "sample_referral"]

_GENERIC_SPATIAL_P = 0.25  # share of sampled spatial referrals that use the generic noun

_COLOUR_TEMPLATES = ("the {colour} shape", "the {colour} one", "the {colour} object")
_SPATIAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "left": ("the {noun} on the left", "the leftmost {noun}"),
    "right": ("the {noun} on the right", "the rightmost {noun}"),
    "top": ("the top {noun}", "the {noun} at the top"),
    "bottom": ("the bottom {noun}", "the {noun} at the bottom"),
}


class ToyExample(NamedTuple):
    scene: Scene
    referral: Referral

    def target_mask(self, height: int = 48, width: int = 48) -> np.ndarray:
        return masks(self.scene, height, width)[self.referral.target]


def _pick(templates: Sequence[str], rng: np.random.Generator | None) -> str:
    # Without an rng the first template is the canonical wording.
    return templates[0] if rng is None else templates[int(rng.integers(len(templates)))]


def _referrals_of_kind(scene: Scene, kind: str, rng: np.random.Generator | None) -> list[Referral]:
    objs = scene.objects
    found: list[Referral] = []
    if kind == "colour":
        for colour in COLOURS:
            hits = resolve_colour(scene, colour)
            if len(hits) == 1:
                found.append(Referral(_pick(_COLOUR_TEMPLATES, rng).format(colour=colour), kind, hits[0]))
    elif kind == "colour_shape":
        for colour in COLOURS:
            for shape in SHAPES:
                hits = resolve_colour_shape(scene, colour, shape)
                if len(hits) == 1:
                    found.append(Referral(f"the {colour} {shape}", kind, hits[0], noun=shape))
    elif kind == "spatial":
        for noun in (*SHAPES, GENERIC_NOUN):
            for side in SIDES:
                hits = resolve_spatial(scene, noun, side)
                if len(hits) == 1:
                    text = _pick(_SPATIAL_TEMPLATES[side], rng).format(noun=noun)
                    found.append(Referral(text, kind, hits[0], relation=side, noun=noun))
    elif kind == "relational":
        for anchor, a in enumerate(objs):
            for noun in SHAPES:
                for relation in RELATIONS:
                    hits = resolve_relational(scene, noun, relation, a.colour, a.shape)
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
    seed: int = EVAL_SEED, n_per_kind: int = 50, kinds: Sequence[str] = ALL_KINDS, n_objects: tuple[int, int] = (2, 4)
) -> list[ToyExample]:
    """``n_per_kind`` (scene, referral) examples per kind, deterministic in ``seed``; each kind has
    its own stream (:func:`refam.toy.eval_sets.per_kind_examples`)."""
    return per_kind_examples(
        seed, n_per_kind, kinds, ALL_KINDS, lambda rng, kind: ToyExample(*sample_referral(rng, kind, n_objects))
    )
