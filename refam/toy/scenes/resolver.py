"""What a referral means, checked independently of how it was worded: :func:`resolve` interprets a
:class:`Referral`'s structured meaning (kind, noun, relation, anchor) on a scene and returns every
object that satisfies it, so a referral is valid iff exactly its target comes back."""

from __future__ import annotations

from dataclasses import dataclass

from refam.toy.scenes.world import GENERIC_NOUN, RELATION_AXIS, SIDE_AXIS, SPATIAL_MARGIN, Scene, ToyObject

__all__ = [
    "ALL_KINDS",
    "Referral",
    "resolve",
    "resolve_colour",
    "resolve_colour_shape",
    "resolve_relational",
    "resolve_spatial",
]

ALL_KINDS: tuple[str, ...] = ("colour", "colour_shape", "spatial", "relational")


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


def _signed(obj: ToyObject, coord: str, sign: int) -> float:
    return sign * getattr(obj, coord)


def resolve_colour(scene: Scene, colour: str) -> list[int]:
    return [k for k, o in enumerate(scene.objects) if o.colour == colour]


def resolve_colour_shape(scene: Scene, colour: str, shape: str) -> list[int]:
    # Only meaningful when colour alone is ambiguous; otherwise it would just be a "colour" referral.
    if len(resolve_colour(scene, colour)) < 2:
        return []
    return [k for k, o in enumerate(scene.objects) if o.colour == colour and o.shape == shape]


def resolve_spatial(scene: Scene, noun: str, side: str) -> list[int]:
    coord, sign = SIDE_AXIS[side]
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


def resolve_relational(
    scene: Scene, noun: str, relation: str, anchor_colour: str, anchor_shape: str
) -> list[int]:
    objs = scene.objects
    anchors = [k for k, o in enumerate(objs) if o.colour == anchor_colour and o.shape == anchor_shape]
    if len(anchors) != 1:
        return []
    anchor = anchors[0]
    if sum(o.shape == noun for o in objs) < 2:  # the relation must be needed, not decorative
        return []
    coord, sign = RELATION_AXIS[relation]
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
        return resolve_colour(scene, objs[referral.target].colour)
    if referral.kind == "colour_shape":
        t = objs[referral.target]
        return resolve_colour_shape(scene, t.colour, t.shape)
    if referral.kind == "spatial":
        assert referral.noun is not None and referral.relation is not None
        return resolve_spatial(scene, referral.noun, referral.relation)
    if referral.kind == "relational":
        assert referral.noun is not None and referral.relation is not None and referral.anchor is not None
        a = objs[referral.anchor]
        return resolve_relational(scene, referral.noun, referral.relation, a.colour, a.shape)
    raise ValueError(f"unknown referral kind {referral.kind!r}; expected one of {ALL_KINDS}")
