"""Tests for refam.toy.scenes: exact masks, deterministic sampling, unambiguous referring expressions.

The referral checks parse the *text* and apply the rules written out again here, so they do not share
code (or bugs) with the generator's own resolver.
"""

from __future__ import annotations

import collections
import math
import re
import time

import numpy as np
import pytest

from refam.toy.scenes import (
    ALL_KINDS,
    BACKGROUND,
    COLOURS,
    EVAL_SEED,
    SHAPES,
    SIZE_RADII,
    TRAIN_SEED,
    Referral,
    Scene,
    ToyExample,
    ToyObject,
    caption,
    flip_lr,
    make_eval_set,
    masks,
    referrals,
    render,
    resolve,
    sample_referral,
    sample_scene,
    scene_from_seed,
    training_batch,
    transpose,
)

MARGIN = 0.15  # the spatial margin the spec asks for, restated rather than imported


def scenes(seed: int, count: int, n_objects: tuple[int, int] = (2, 4)) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, n_objects) for _ in range(count)]


def obj(shape: str, colour: str, cx: float, cy: float, size: str = "small") -> ToyObject:
    return ToyObject(shape, colour, size, cx, cy, 0.11 if size == "small" else 0.18)


# --------------------------------------------------------------------------------------------------
# Independent referral checker (parses the text)
# --------------------------------------------------------------------------------------------------

_SHAPE = "(circle|square|triangle|shape)"
_SPATIAL_PATTERNS = [
    (re.compile(rf"^the {_SHAPE} on the (left|right)$"), 1, 2),
    (re.compile(rf"^the (left|right)most {_SHAPE}$"), 2, 1),
    (re.compile(rf"^the (top|bottom) {_SHAPE}$"), 2, 1),
    (re.compile(rf"^the {_SHAPE} at the (top|bottom)$"), 1, 2),
]
_RELATIONAL = re.compile(r"^the (circle|square|triangle) (left of|right of|above|below) the (\w+) (\w+)$")


def offset_towards(o: ToyObject, side: str) -> float:
    """How far towards ``side`` the object lies (y is the row, so "top" means small cy)."""
    return {"left": -o.cx, "right": o.cx, "top": -o.cy, "bottom": o.cy}[side]


def matching_objects(scene: Scene, ref: Referral) -> list[int]:
    """Objects the text of ``ref`` describes, by the rules of its kind; valid iff exactly one."""
    objs = scene.objects
    text = ref.text
    assert text == text.lower() and "pink" not in text
    if ref.kind == "colour":
        m = re.fullmatch(r"the (\w+) (shape|one|object)", text)
        assert m, text
        return [k for k, o in enumerate(objs) if o.colour == m[1]]
    if ref.kind == "colour_shape":
        m = re.fullmatch(r"the (\w+) (circle|square|triangle)", text)
        assert m, text
        assert sum(o.colour == m[1] for o in objs) >= 2, f"{text!r}: colour alone would do"
        return [k for k, o in enumerate(objs) if o.colour == m[1] and o.shape == m[2]]
    if ref.kind == "spatial":
        for pattern, noun_group, side_group in _SPATIAL_PATTERNS:
            m = pattern.fullmatch(text)
            if m:
                noun, side = m[noun_group], m[side_group]
                break
        else:
            raise AssertionError(f"unparsed spatial referral {text!r}")
        cands = [k for k, o in enumerate(objs) if noun in ("shape", o.shape)]
        assert len(cands) >= 2, f"{text!r}: the noun alone would do"
        return [
            c
            for c in cands
            if all(
                offset_towards(objs[c], side) >= offset_towards(objs[o], side) + MARGIN
                for o in cands
                if o != c
            )
        ]
    if ref.kind == "relational":
        m = _RELATIONAL.fullmatch(text)
        assert m, text
        noun, relation, a_colour, a_shape = m.groups()
        anchors = [k for k, o in enumerate(objs) if o.colour == a_colour and o.shape == a_shape]
        assert anchors == [ref.anchor], f"{text!r}: anchor not unique or not the recorded one"
        anchor = objs[anchors[0]]
        assert sum(o.shape == noun for o in objs) >= 2, f"{text!r}: the noun alone would do"
        side = {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}[relation]
        beyond = [
            k
            for k, o in enumerate(objs)
            if k != anchors[0] and o.shape == noun and offset_towards(o, side) > offset_towards(anchor, side)
        ]
        # Valid only as the one object of its shape on that side, and clearly beyond the anchor.
        if len(beyond) != 1 or offset_towards(objs[beyond[0]], side) - offset_towards(anchor, side) < MARGIN:
            return []
        return beyond
    raise AssertionError(f"unknown kind {ref.kind!r}")


def assert_unambiguous(scene: Scene, ref: Referral) -> None:
    assert ref.kind in ALL_KINDS
    assert matching_objects(scene, ref) == [ref.target], (ref, scene)
    assert resolve(scene, ref) == [ref.target]


# --------------------------------------------------------------------------------------------------
# Scenes and rasterisation
# --------------------------------------------------------------------------------------------------


def test_vocabulary() -> None:
    assert list(COLOURS) == ["red", "green", "blue", "yellow", "purple"]
    assert "pink" not in COLOURS
    assert SHAPES == ("circle", "square", "triangle")
    values = [BACKGROUND, *COLOURS.values()]
    assert len(set(values)) == len(values)
    # Clearly distinct: every pair differs by a lot in some channel.
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) >= 60, (a, b)
    assert TRAIN_SEED != EVAL_SEED


def test_sampling_is_deterministic() -> None:
    a, b = scenes(3, 20), scenes(3, 20)
    assert a == b
    assert scenes(4, 20) != a
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert [caption(s, rng_a) for s in a] == [caption(s, rng_b) for s in b]
    assert [referrals(s) for s in a] == [referrals(s) for s in b]
    for s in a:
        assert scene_from_seed(s.seed) == s
        assert Scene.from_dict(s.to_dict()) == s


def test_scene_geometry() -> None:
    counts = collections.Counter()
    for s in scenes(11, 300):
        counts[len(s)] += 1
        for i, o in enumerate(s.objects):
            lo, hi = SIZE_RADII[o.size]
            assert lo <= o.radius <= hi
            x0, y0, x1, y1 = o.box
            assert min(x0, y0) >= 0.02 and max(x1, y1) <= 0.98
            for p in s.objects[i + 1 :]:
                gap_x = abs(o.cx - p.cx) - o.radius - p.radius
                gap_y = abs(o.cy - p.cy) - o.radius - p.radius
                assert max(gap_x, gap_y) >= 0.04
    assert set(counts) == {2, 3, 4}
    assert set(len(s) for s in scenes(12, 50, (1, 1))) == {1}
    assert max(SIZE_RADII["small"]) < min(SIZE_RADII["big"])


def assert_masks_match_render(scene: Scene, height: int, width: int) -> np.ndarray:
    image = render(scene, height, width)
    m = masks(scene, height, width)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert m.shape == (len(scene), height, width) and m.dtype == bool
    assert (m.sum(axis=0) <= 1).all(), "masks overlap"
    assert m.reshape(len(scene), -1).any(axis=1).all(), "empty mask"
    for colour, rgb in COLOURS.items():
        region = (image == rgb).all(axis=-1)
        union = np.zeros((height, width), dtype=bool)
        for k, o in enumerate(scene.objects):
            if o.colour == colour:
                union |= m[k]
        assert (region == union).all(), colour
    assert ((image == BACKGROUND).all(axis=-1) == ~m.any(axis=0)).all()
    return m


@pytest.mark.parametrize(("height", "width"), [(48, 48), (37, 53), (53, 37), (64, 96)])
def test_masks_exact_and_disjoint(height: int, width: int) -> None:
    for s in scenes(21, 40):
        assert_masks_match_render(s, height, width)


def test_mask_area_matches_analytic_area() -> None:
    rel_errors = []
    for s in scenes(31, 60):
        for height, width in [(37, 53), (333, 517)]:
            m = masks(s, height, width)
            for k, o in enumerate(s.objects):
                expected = o.area * height * width
                count = int(m[k].sum())
                # Boundary rounding: at most ~one pixel per boundary row and column of the box.
                tol = 2 * o.radius * (height + width) + 2
                assert abs(count - expected) <= tol, (o, height, width, count, expected)
                if height == 333:
                    assert abs(count - expected) <= 0.02 * expected, (o, count, expected)
                elif o.size == "big":
                    rel_errors.append(abs(count - expected) / expected)
    assert np.mean(rel_errors) < 0.03


def test_shapes_rasterise_as_specified() -> None:
    s = Scene(
        [
            obj("circle", "red", 0.25, 0.25, "big"),
            obj("square", "blue", 0.75, 0.25, "big"),
            obj("triangle", "green", 0.5, 0.75, "big"),
        ]
    )
    m = assert_masks_match_render(s, 100, 100)
    circle, square, triangle = m
    assert circle.sum() == pytest.approx(math.pi * 18**2, rel=0.03)
    assert square.sum() == 36 * 36  # centres at 57.5..92.5 hit exactly 36 columns and rows
    # Triangle points up: one pixel wide near the apex, full width at the base, left-right symmetric.
    rows = np.flatnonzero(triangle.any(axis=1))
    widths = triangle[rows].sum(axis=1)
    assert widths[0] <= 2 and widths[-1] >= 35
    assert (np.diff(widths) >= 0).all()
    assert (triangle == triangle[:, ::-1]).all()


@pytest.mark.parametrize(("height", "width"), [(48, 48), (37, 53)])
def test_flip_lr_mirrors_the_image(height: int, width: int) -> None:
    for s in scenes(41, 30):
        flipped = flip_lr(s)
        assert (render(flipped, height, width) == render(s, height, width)[:, ::-1]).all()
        assert (masks(flipped, height, width) == masks(s, height, width)[:, :, ::-1]).all()


def test_transpose_swaps_axes() -> None:
    for s in scenes(42, 30):
        t = transpose(s)
        assert [(o.cx, o.cy) for o in t.objects] == [(o.cy, o.cx) for o in s.objects]
        no_triangles = Scene([o for o in s.objects if o.shape != "triangle"])
        image = render(no_triangles, 37, 53)
        assert (render(transpose(no_triangles), 53, 37) == image.transpose(1, 0, 2)).all()


def test_render_is_fast() -> None:
    batch = scenes(43, 200, (4, 4))
    render(batch[0])  # warm the coordinate-grid cache
    start = time.perf_counter()
    for s in batch:
        render(s)
    per_render = (time.perf_counter() - start) / len(batch)
    assert per_render < 5e-3, f"{per_render * 1e3:.2f} ms per 48x48 render"


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------

_PHRASE = re.compile(r"(?:(small|big) )?(red|green|blue|yellow|purple) (circle|square|triangle)")


def test_captions_name_every_object() -> None:
    rng = np.random.default_rng(51)
    positional = with_size = 0
    all_scenes = scenes(52, 400, (1, 4))
    for s in all_scenes:
        text = caption(s, rng)
        assert text == text.lower() and "pink" not in text
        found = _PHRASE.findall(text)
        assert collections.Counter((c, sh) for _, c, sh in found) == collections.Counter(
            (o.colour, o.shape) for o in s.objects
        ), (text, s)
        for size, colour, shape in found:
            if size:
                with_size += 1
                assert any((o.size, o.colour, o.shape) == (size, colour, shape) for o in s.objects)
        positional += bool(re.search(r"\b(left|right|top|bottom|middle|above|below)\b", text))
    # Spatial words are seen in training, but most captions have none.
    assert 0.03 * len(all_scenes) < positional < 0.4 * len(all_scenes)
    assert with_size > 0


def test_shape_only_and_colour_only_captions_name_the_objects() -> None:
    """Phase-2 training captions: each word must carry its own attribute, so a "shape" caption names
    exactly the scene's shapes and no colour, a "colour" caption exactly its colours and no shape."""
    vocab = {"colour": set(COLOURS), "shape": set(SHAPES)}
    other = {"colour": "shape", "shape": "colour"}
    rng = np.random.default_rng(57)
    for s in scenes(58, 200, (1, 4)):
        for naming, named in vocab.items():
            text = caption(s, rng, naming)
            words = re.findall(r"[a-z]+", text)
            assert not vocab[other[naming]] & set(words), text
            assert collections.Counter(w for w in words if w in named) == collections.Counter(
                getattr(o, naming) for o in s.objects
            ), (text, s)
    with pytest.raises(ValueError, match="naming"):
        caption(s, rng, "size")


def test_positional_captions_are_true() -> None:
    rng = np.random.default_rng(53)
    checked = 0
    for s in scenes(54, 400, (2, 3)):
        text = caption(s, rng)
        for size_colour_shape, where in re.findall(
            r"a ((?:\w+ )?\w+ \w+) (on the left|on the right|at the top|at the bottom)", text
        ):
            words = size_colour_shape.split()
            side = where.split()[-1]
            # Identical phrases ("a red triangle at the top and a red triangle at the bottom"):
            # one of the objects so described must be the clear extreme on that side.
            assert any(
                all(
                    offset_towards(o, side) >= offset_towards(p, side) + MARGIN
                    for p in s.objects
                    if p is not o
                )
                for o in s.objects
                if [o.colour, o.shape] == words[-2:]
            ), (text, s)
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------------------------------
# Referring expressions
# --------------------------------------------------------------------------------------------------


def test_all_referrals_are_unambiguous() -> None:
    kinds = collections.Counter()
    for s in scenes(61, 300):
        for ref in referrals(s):
            assert_unambiguous(s, ref)
            kinds[ref.kind] += 1
        for ref in referrals(s, rng=np.random.default_rng(0)):  # random wordings too
            assert_unambiguous(s, ref)
    assert set(kinds) == set(ALL_KINDS)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_is_sampleable(kind: str) -> None:
    rng = np.random.default_rng(71)
    texts = set()
    for _ in range(40):
        s, ref = sample_referral(rng, kind)
        assert ref.kind == kind
        assert_unambiguous(s, ref)
        assert (ref.kind, ref.target, ref.relation, ref.anchor, ref.noun) in {
            (r.kind, r.target, r.relation, r.anchor, r.noun) for r in referrals(s)
        }
        texts.add(ref.text)
    assert len(texts) > 5


def test_sample_referral_errors() -> None:
    rng = np.random.default_rng(72)
    with pytest.raises(ValueError, match="unknown referral kind"):
        sample_referral(rng, "size")
    with pytest.raises(RuntimeError, match="spatial"):
        sample_referral(rng, "spatial", n_objects=(1, 1), max_tries=20)
    s, ref = sample_referral(rng, "colour", n_objects=(1, 1))
    assert ref.target == 0 and len(s) == 1


def test_hand_built_scene_referrals() -> None:
    s = Scene(
        [
            obj("circle", "red", 0.15, 0.5),  # 0
            obj("square", "blue", 0.5, 0.5),  # 1
            obj("circle", "green", 0.85, 0.5),  # 2
            obj("triangle", "red", 0.5, 0.15),  # 3
        ]
    )
    texts = {r.text: r.target for r in referrals(s)}
    assert texts["the blue shape"] == 1 and texts["the green shape"] == 2
    assert "the red shape" not in texts
    assert texts["the red circle"] == 0 and texts["the red triangle"] == 3
    assert "the blue square" not in texts  # blue is unique, so that is a plain colour referral
    assert texts["the circle on the left"] == 0 and texts["the circle on the right"] == 2
    assert "the top circle" not in texts  # both circles share a row
    assert texts["the top shape"] == 3
    assert texts["the circle left of the blue square"] == 0
    assert texts["the circle right of the red triangle"] == 2
    assert "the circle below the blue square" not in texts
    for ref in referrals(s):
        assert_unambiguous(s, ref)

    # Two circles on the left of the anchor: "the circle left of ..." must not be produced.
    crowded = Scene(
        [
            obj("circle", "red", 0.15, 0.2),
            obj("circle", "green", 0.15, 0.8),
            obj("square", "blue", 0.6, 0.5),
        ]
    )
    assert not [r for r in referrals(crowded, ["relational"]) if r.relation == "left of"]


def test_referrals_follow_a_flip() -> None:
    mirror = {"left": "right", "right": "left", "left of": "right of", "right of": "left of"}
    for s in scenes(81, 100):

        def key(r: Referral, swap: bool) -> tuple:
            rel = mirror.get(r.relation, r.relation) if swap else r.relation
            return (r.kind, r.target, rel, r.anchor, r.noun)

        assert {key(r, True) for r in referrals(s)} == {key(r, False) for r in referrals(flip_lr(s))}


def test_eval_set_is_deterministic_and_held_out() -> None:
    a = make_eval_set(EVAL_SEED, 8)
    assert a == make_eval_set(EVAL_SEED, 8)
    assert len(a) == 8 * len(ALL_KINDS) and all(isinstance(e, ToyExample) for e in a)
    assert [e.referral.kind for e in a] == [k for k in ALL_KINDS for _ in range(8)]
    for scene, ref in a:
        assert_unambiguous(scene, ref)
    # Per-kind streams: a subset of kinds reproduces the same examples.
    assert make_eval_set(EVAL_SEED, 8, kinds=("relational",)) == a[-8:]
    assert make_eval_set(EVAL_SEED + 1, 8) != a
    mask = a[0].target_mask(37, 53)
    assert mask.shape == (37, 53) and mask.any()
    # Held out: the first training scenes share no scene seed with the eval set.
    train_rng = np.random.default_rng(TRAIN_SEED)
    train_seeds = {sample_scene(train_rng).seed for _ in range(200)}
    assert not train_seeds & {e.scene.seed for e in a}


def test_training_batch() -> None:
    images, captions = training_batch(np.random.default_rng(TRAIN_SEED), 16)
    assert images.shape == (16, 48, 48, 3) and images.dtype == np.uint8
    assert len(captions) == 16 and all(isinstance(c, str) and c for c in captions)
    assert not any("pink" in c for c in captions)
    again, captions_again = training_batch(np.random.default_rng(TRAIN_SEED), 16)
    assert (again == images).all() and captions_again == captions
    images, captions = training_batch(np.random.default_rng(1), 3, height=40, width=56)
    assert images.shape == (3, 40, 56, 3) and len(captions) == 3
    # Every image shows at least one object on the background.
    assert all((img != BACKGROUND).any() for img in images)


def test_training_batch_naming_mix() -> None:
    # No mix draws the generator exactly as runs from before the option did (resumed runs replay).
    plain = training_batch(np.random.default_rng(TRAIN_SEED), 16)
    again = training_batch(np.random.default_rng(TRAIN_SEED), 16, naming_mix=None)
    assert (plain[0] == again[0]).all() and plain[1] == again[1]
    images, captions = training_batch(np.random.default_rng(3), 300, naming_mix={"shape": 1, "colour": 1})
    with_colour = [c for c in captions if any(w in c for w in COLOURS)]
    assert 0.35 * 300 < len(with_colour) < 0.65 * 300  # about half colour-only, the rest shape-only
    assert not any(any(sh in c for sh in SHAPES) for c in with_colour)
    for bad in ({"shape": -1.0}, {}, {"texture": 1.0}):
        with pytest.raises(ValueError, match="naming_mix"):
            training_batch(np.random.default_rng(0), 2, naming_mix=bad)
