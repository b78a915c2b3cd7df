"""World v2: nouns visible in every interior patch, five referral kinds checked three ways, and
v1 left exactly as its committed model was trained on it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from refam.expression import DEFAULT_MAGNETS
from refam.toy import scenes as v1
from refam.toy import scenes_v2 as v2
from refam.toy.scenes_v2.world import SPATIAL_MARGIN, Scene, ToyObject
from refam.toy.segmenter import FloodFillSegmenter, ForegroundSegmenter
from refam.toy.worlds import WORLDS, world_of

PATCH = 4  # pixels per latent patch of the toy model at 48 px


def test_world_v1_is_unchanged():
    """The committed v1 model was trained on these scenes and batches: a change to v1 would move
    its reported numbers and its replayed training under it."""
    h = hashlib.sha256()
    for ex in v1.make_eval_set(v1.EVAL_SEED, 20):
        h.update(v1.render(ex.scene).tobytes())
        h.update(ex.referral.text.encode())
    images, captions = v1.training_batch(np.random.default_rng([v1.TRAIN_SEED, 0, 0]), 8)
    h.update(images.tobytes())
    h.update("|".join(captions).encode())
    assert h.hexdigest() == "2b1a9a05cdd697a43d116d166546629f9fc42f8670545fecfd76b67ba5e63315"


def _interior_patches(image: np.ndarray, mask: np.ndarray) -> list[bytes]:
    out = []
    for r in range(0, mask.shape[0], PATCH):
        for c in range(0, mask.shape[1], PATCH):
            if mask[r : r + PATCH, c : c + PATCH].all():
                out.append(image[r : r + PATCH, c : c + PATCH].tobytes())
    return out


def test_every_interior_patch_shows_its_noun():
    """Any interior latent patch of an object is the same tile as any other of its noun and colour,
    and different from every other noun's tile: a patch-sized view tells the noun."""
    tiles: dict[tuple[str, str], set[bytes]] = {}
    rng = np.random.default_rng(3)
    for _ in range(200):
        scene = v2.sample_scene(rng, (1, 4))
        image, masks = v2.render(scene), v2.masks(scene)
        for obj, mask in zip(scene.objects, masks, strict=True):
            patches = _interior_patches(image, mask)
            assert patches, f"{obj} has no whole interior patch"
            tiles.setdefault((obj.colour, obj.noun), set()).update(patches)
    assert all(len(t) == 1 for t in tiles.values()), {k: len(t) for k, t in tiles.items()}
    for colour in v2.COLOURS:
        seen = [next(iter(tiles[(colour, noun)])) for noun in v2.NOUNS if (colour, noun) in tiles]
        assert len(seen) == len(set(seen)) == len(v2.NOUNS)


def test_masks_are_exactly_the_object_pixels():
    rng = np.random.default_rng(4)
    for _ in range(50):
        scene = v2.sample_scene(rng, (2, 4))
        image, masks = v2.render(scene), v2.masks(scene)
        assert masks.sum(axis=0).max() <= 1  # no overlap
        assert np.array_equal(masks.any(axis=0), np.any(image != v2.world.BACKGROUND, axis=-1))


def test_colours_never_include_a_magnet_word():
    assert not set(v2.COLOURS) & set(DEFAULT_MAGNETS)
    assert not set(v2.NOUNS) & set(DEFAULT_MAGNETS)


def test_seeds_are_apart_and_the_sets_share_no_scene():
    seeds = {v2.TRAIN_SEED, v2.VALIDATION_SEED, v2.EVAL_SEED, v1.TRAIN_SEED, v1.EVAL_SEED, v1.VALIDATION_SEED}
    assert len(seeds) == 6
    val = {ex.scene for ex in v2.make_eval_set(v2.VALIDATION_SEED, 40)}
    test = {ex.scene for ex in v2.make_eval_set(v2.EVAL_SEED, 40)}
    assert not val & test


@pytest.mark.parametrize("kind", v2.ALL_KINDS)
def test_each_kind_is_generated_parsed_and_resolved_off_the_pixels(kind):
    examples = v2.make_eval_set(v2.EVAL_SEED, 60, kinds=(kind,))
    for ex in examples:
        ref = ex.referral
        assert ref.kind == kind
        assert v2.parse_referral(ref.text) == ref.meaning
        seen = v2.see_objects(v2.render(ex.scene), v2.masks(ex.scene))
        assert [(o.colour, o.noun) for o in seen] == [(o.colour, o.noun) for o in ex.scene.objects]
        assert v2.resolve_meaning(ref.meaning, seen) == [ref.target]


def _scene(*objects: tuple[str, str, float, float]) -> Scene:
    return Scene(tuple(ToyObject(noun, colour, "small", cx, cy, 0.13) for noun, colour, cx, cy in objects))


def test_hand_built_referrals_of_every_kind():
    # red circle (left), red square (middle), blue circle (right), green circle (bottom middle)
    scene = _scene(("circle", "red", 0.2, 0.3), ("square", "red", 0.5, 0.3), ("circle", "blue", 0.8, 0.3),
                   ("circle", "green", 0.5, 0.75))
    texts = {r.text: r.target for r in v2.referrals(scene)}
    assert texts["the blue one"] == 2 and texts["the green one"] == 3
    assert "the red one" not in texts  # two red objects
    assert texts["the square"] == 1 and "the circle" not in texts
    assert texts["the red circle"] == 0  # red and circle are each ambiguous
    assert "the blue circle" not in texts  # blue alone would do
    assert texts["the circle on the left"] == 0 and texts["the circle on the right"] == 2
    assert texts["the circle in the middle"] == 3
    assert texts["the circle left of the red square"] == 0
    assert texts["the circle below the red square"] == 3
    assert texts["the circle right of the red square"] == 2  # green is level with the square, not right of it
    assert "the circle above the red square" not in texts


def test_spatial_words_need_the_margin():
    close = _scene(("circle", "red", 0.40, 0.3), ("circle", "blue", 0.40 + SPATIAL_MARGIN - 0.03, 0.75))
    assert not [r for r in v2.referrals(close, ("spatial",))]
    apart = _scene(("circle", "red", 0.2, 0.3), ("circle", "blue", 0.2 + SPATIAL_MARGIN + 0.05, 0.75))
    assert {r.text for r in v2.referrals(apart, ("spatial",))} == {"the circle on the left", "the circle on the right"}


def test_the_parser_reads_meanings_and_refuses_other_text():
    m = v2.parse_referral("The  striped one")
    assert m is None  # texture adjectives are not nouns of this world
    assert v2.parse_referral("the left diamond") == v2.Meaning("spatial", noun="diamond", relation="left")
    assert v2.parse_referral("the square above the yellow triangle") == v2.Meaning(
        "relational", noun="square", relation="above", anchor_colour="yellow", anchor_noun="triangle")
    assert v2.parse_referral("the pink circle") is None


def test_a_wrong_target_fails_verification():
    scene = _scene(("circle", "red", 0.2, 0.3), ("square", "blue", 0.7, 0.3))
    good = next(r for r in v2.referrals(scene, ("noun",)) if r.text == "the square")
    assert v2.verify(scene, good)
    assert not v2.verify(scene, v2.Referral(good.text, good.kind, 0, good.meaning))
    assert not v2.verify(scene, v2.Referral("the circle", good.kind, 1, good.meaning))


def test_all_five_kinds_and_middle_referrals_occur():
    examples = v2.make_eval_set(v2.EVAL_SEED, 100, kinds=("spatial",))
    relations = {ex.referral.meaning.relation for ex in examples}
    assert relations == {"left", "right", "middle"}


def test_captions_follow_the_naming_mix():
    rng = np.random.default_rng(5)
    _, captions = v2.training_batch(rng, 400, n_objects=(1, 1))
    colour_words, nouns = set(v2.COLOURS), set(v2.NOUNS)
    only_nouns = sum(not set(c.split()) & colour_words for c in captions) / len(captions)
    only_colours = sum(not set(c.split()) & nouns for c in captions) / len(captions)
    assert abs(only_nouns - v2.DEFAULT_NAMING_MIX["noun"]) < 0.07
    assert abs(only_colours - v2.DEFAULT_NAMING_MIX["colour"]) < 0.07


def test_the_registry_knows_each_scene_world():
    assert world_of(v2.scene_from_seed(1)) is WORLDS["v2"]
    assert world_of(v1.scene_from_seed(1)) is WORLDS["v1"]
    with pytest.raises(TypeError):
        world_of(object())


def test_foreground_segmenter_returns_the_whole_textured_object():
    scene = _scene(("triangle", "green", 0.3, 0.4), ("square", "green", 0.7, 0.6))
    image, masks = v2.render(scene), v2.masks(scene)
    rows, cols = np.nonzero(masks[0])
    point = np.array([[cols.mean(), rows.mean()]])
    labels = np.array([1])
    whole = ForegroundSegmenter()
    whole.set_image(image)
    got = whole.predict(point, labels).mask
    assert np.array_equal(got, masks[0])
    flat = FloodFillSegmenter()
    flat.set_image(image)
    assert flat.predict(point, labels).mask.sum() < masks[0].sum()  # one stripe, not the triangle
