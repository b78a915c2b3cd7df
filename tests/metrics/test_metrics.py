"""Tests for refam.metrics (and refam.data.coco_masks): hand-computed cases plus real COCO / RefCOCOg / DAVIS-style masks."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from refam.data.coco_masks import decode_coco_polygons
from refam.metrics import (
    RisScores,
    boundary_map,
    boundary_radius,
    f_measure,
    intersection_union,
    iou,
    j_measure,
    jf_scores,
    mean_iou,
    overall_iou,
    point_accuracy,
    point_in_mask,
)

LEFT_CAT, RIGHT_CAT = 2190839, 2190842


def box(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bool (h, w) mask, True on rows[0]..rows[1]-1 x cols[0]..cols[1]-1."""
    m = np.zeros((h, w), dtype=bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def shift(mask: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """Translate by (dx, dy) pixels, filling with background (no wrap-around)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


@pytest.fixture(scope="module")
def two_cats() -> dict[int, dict]:
    anns = json.loads(shared_path("coco_two_cats", "annotations.json").read_text())
    return {a["id"]: a for a in anns}


@pytest.fixture(scope="module")
def bike_objects() -> tuple[np.ndarray, np.ndarray]:
    """Objects 1 and 2 of the real 854x480 palette mask; both lie well inside the frame."""
    labels = np.array(Image.open(shared_path("video_clips", "bike", "masks", "00000.png")))
    assert labels.shape == (480, 854)
    return labels == 1, labels == 2


# --------------------------------------------------------------------------- IoU and input handling


def test_iou_hand_computed():
    pred = box(4, 4, (0, 2), (0, 2))  # 4 px: columns 0-1
    gt = box(4, 4, (0, 2), (1, 3))  # 4 px: columns 1-2
    # overlap: rows 0-1 x column 1 = 2 px; union = 4 + 4 - 2 = 6 px
    assert intersection_union(pred, gt) == (2, 6)
    assert iou(pred, gt) == pytest.approx(2 / 6)


def test_iou_both_empty_is_one_and_one_empty_is_zero():
    empty = np.zeros((3, 3), dtype=bool)
    assert iou(empty, empty) == 1.0
    assert iou(empty, box(3, 3, (0, 1), (0, 1))) == 0.0


def test_iou_accepts_torch_uint8_and_float_masks():
    gt = box(4, 4, (0, 2), (1, 3))
    soft = np.where(box(4, 4, (0, 2), (0, 2)), 0.7, 0.3)  # 0.3 is background, 0.7 foreground
    assert iou(soft, gt) == pytest.approx(2 / 6)
    assert iou(torch.from_numpy(soft).to(torch.bfloat16), torch.from_numpy(gt)) == pytest.approx(2 / 6)
    assert iou(gt.astype(np.uint8) * 255, gt) == 1.0


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="pred has shape"):
        iou(np.zeros((4, 5)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="void has shape"):
        j_measure(np.zeros((4, 4)), np.zeros((4, 4)), void=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="gt must be a 2-D"):
        f_measure(np.zeros((4, 4)), np.zeros((1, 4, 4)))


# --------------------------------------------------------------------------- oIoU / mIoU / RisScores


def test_oiou_differs_from_miou():
    small_gt = box(10, 10, (0, 1), (0, 1))  # 1 px, predicted exactly: I=1, U=1, IoU=1
    big_gt = box(10, 10, (0, 10), (0, 10))  # 100 px
    big_pred = box(10, 10, (0, 5), (0, 10))  # 50 px inside it: I=50, U=100, IoU=0.5
    pairs = [(small_gt, small_gt), (big_pred, big_gt)]
    # oIoU = (1 + 50) / (1 + 100) = 51/101 ; mIoU = (1 + 0.5) / 2 = 0.75
    assert overall_iou(pairs) == pytest.approx(51 / 101)
    assert mean_iou(pairs) == pytest.approx(0.75)


def test_aggregates_reject_empty_input():
    with pytest.raises(ValueError, match="empty"):
        overall_iou([])
    with pytest.raises(ValueError, match="empty"):
        mean_iou(iter(()))


def test_ris_scores_accumulates_per_sentence(two_cats):
    left = decode_coco_polygons(two_cats[LEFT_CAT]["segmentation"], 480, 640)
    right = decode_coco_polygons(two_cats[RIGHT_CAT]["segmentation"], 480, 640)
    scores = RisScores()
    assert math.isnan(scores.oiou) and math.isnan(scores.miou) and scores.count == 0

    assert scores.add(left, left, point=(100.0, 300.0)) == 1.0  # perfect prediction, point on the cat
    assert scores.add(right, left, point=(500.0, 100.0)) == 0.0  # wrong cat, point off the target
    scores.add(left, left)  # no point: must not count towards point accuracy

    assert scores.ious == (1.0, 0.0, 1.0)
    assert scores.count == 3
    assert scores.miou == pytest.approx(2 / 3)
    n_left, n_right = int(left.sum()), int(right.sum())
    # intersections: n_left + 0 + n_left ; unions: n_left + (n_left + n_right) + n_left
    assert scores.oiou == pytest.approx(2 * n_left / (3 * n_left + n_right))
    assert scores.point_accuracy == 0.5
    assert scores.as_dict() == {
        "oIoU": scores.oiou,
        "mIoU": scores.miou,
        "point_accuracy": 0.5,
        "count": 3,
    }


# --------------------------------------------------------------------------- points


def test_point_in_mask_pixel_boundaries():
    mask = np.zeros((3, 4), dtype=bool)  # H=3, W=4
    mask[1, 2] = True  # covers x in [2, 3), y in [1, 2)
    assert point_in_mask((2.0, 1.0), mask)  # top-left corner of that pixel
    assert point_in_mask((2.999, 1.999), mask)
    assert not point_in_mask((3.0, 1.0), mask)  # next column
    assert not point_in_mask((2.5, 2.0), mask)  # next row
    assert not point_in_mask((1.0, 2.0), mask)  # (x, y) swapped to (row, col) would hit it


def test_point_in_mask_outside_image_is_false():
    mask = np.ones((3, 4), dtype=bool)
    # floor(-0.5) = -1 would wrap to the last column with plain numpy indexing.
    assert not point_in_mask((-0.5, 1.0), mask)
    assert not point_in_mask((1.0, -0.01), mask)
    assert not point_in_mask((4.0, 0.0), mask)  # x == W
    assert not point_in_mask((0.0, 3.0), mask)  # y == H
    assert not point_in_mask((float("nan"), 0.0), mask)
    assert point_in_mask((3.99, 2.99), mask)


def test_point_accuracy_hand_computed(two_cats):
    left = decode_coco_polygons(two_cats[LEFT_CAT]["segmentation"], 480, 640)
    right = decode_coco_polygons(two_cats[RIGHT_CAT]["segmentation"], 480, 640)
    # on the left cat's body, on the right cat's body, on the couch in the top-left corner
    points = [(100.0, 300.0), (480.0, 200.0), (5.0, 5.0)]
    assert point_accuracy(points, [left, right, left]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="points has 3 entries but masks has 2"):
        point_accuracy(points, [left, right])


# --------------------------------------------------------------------------- J (region similarity)


def test_j_measure_ignores_void_pixels():
    gt = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[0, 1, 1, 0]], dtype=bool)
    void = np.array([[0, 0, 1, 0]], dtype=bool)
    # without void: I = 1 (px 1), U = 3 (px 0, 1, 2) -> 1/3
    assert j_measure(pred, gt) == pytest.approx(1 / 3)
    # px 2 is void: I = 1, U = 2 (px 0, 1) -> 1/2
    assert j_measure(pred, gt, void) == pytest.approx(0.5)
    # everything void: nothing left to compare, davis scores 1
    assert j_measure(pred, gt, np.ones_like(gt)) == 1.0


# --------------------------------------------------------------------------- F (boundary measure)


def test_boundary_map_is_offset_half_a_pixel_towards_origin():
    square = box(10, 10, (2, 6), (2, 6))  # rows 2-5, cols 2-5
    # seg2bmap marks pixels differing from their E, S or SE neighbour: the 16-px perimeter
    # of rows 1-5 x cols 1-5 (one row/column above/left of the square, its own last row/column).
    expected = box(10, 10, (1, 6), (1, 6)) & ~box(10, 10, (2, 5), (2, 5))
    assert expected.sum() == 16
    np.testing.assert_array_equal(boundary_map(square), expected)


def test_boundary_map_at_the_bottom_right_border():
    seg = box(3, 3, (1, 3), (1, 3))  # 2x2 block in the bottom-right corner
    # Last row compares only with E, last column only with S, the corner pixel never counts:
    # the block's own pixels are not boundary, only the row above and the column left of it.
    expected = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(seg), expected)


def test_f_measure_uses_a_round_disk():
    one_px = box(10, 10, (5, 6), (5, 6))  # boundary: 2x2 block rows 4-5 x cols 4-5
    diag = box(10, 10, (7, 8), (7, 8))  # boundary: 2x2 block rows 6-7 x cols 6-7
    # radius 2: only (5,5)-(6,6) is close enough (dist^2 = 2 <= 4); (4,5)-(6,6) has dist^2 = 5
    # and (4,4)-(6,6) dist^2 = 8, which a square footprint would accept. P = R = 1/4 -> F = 1/4.
    assert f_measure(diag, one_px, bound_th=2) == pytest.approx(0.25)


def test_f_measure_hand_computed_with_pixel_radius():
    gt = box(10, 10, (2, 6), (2, 6))  # boundary ring: rows 1-5 x cols 1-5
    pred = box(10, 10, (2, 6), (5, 9))  # shifted 3 columns right: ring rows 1-5 x cols 4-8
    # bound_th=1 -> radius 1 (a plus-shaped disk). GT ring pixels within 1 px of the pred ring:
    # column 5 (5 px, next to pred column 4 or on pred rows 1/5) + (1,3),(1,4),(5,3),(5,4) = 9 of 16.
    # By symmetry precision is also 9/16, so F = 9/16.
    assert f_measure(pred, gt, bound_th=1) == pytest.approx(9 / 16)
    # J: I = rows 2-5 x col 5 = 4 px, U = 16 + 16 - 4 = 28
    assert j_measure(pred, gt) == pytest.approx(4 / 28)


def test_f_measure_edge_cases():
    empty = np.zeros((20, 20), dtype=bool)
    obj = box(20, 20, (5, 12), (4, 15))
    assert f_measure(empty, obj) == 0.0  # nothing predicted: precision 1, recall 0
    assert f_measure(obj, empty) == 0.0  # nothing to find: precision 0, recall 1
    assert f_measure(empty, empty) == 1.0
    assert f_measure(obj, obj) == 1.0
    assert f_measure(obj, obj, void=obj) == 1.0  # both boundaries voided away: as both empty


def test_boundary_radius_rule():
    # sqrt(854^2 + 480^2) = sqrt(959716) = 979.65 ; 0.008 * 979.65 = 7.84 -> ceil = 8
    assert boundary_radius((480, 854)) == 8
    # 0.008 * sqrt(480^2 + 640^2) = 0.008 * 800 = 6.4 -> 7
    assert boundary_radius((480, 640)) == 7
    assert boundary_radius((480, 854), bound_th=3) == 3  # >= 1 means pixels


def test_f_measure_tolerates_shifts_within_the_radius(bike_objects):
    gt, _ = bike_objects  # real object mask on an 854x480 frame: radius 8
    for dx, dy in [(3, 0), (8, 0), (5, 5)]:  # |(5, 5)| = 7.07 <= 8
        pred = shift(gt, dx, dy)
        assert f_measure(pred, gt) == 1.0, (dx, dy)
        assert j_measure(pred, gt) < 0.6, (dx, dy)
    # one pixel past the radius the vertical edges stop matching
    f9 = f_measure(shift(gt, 9), gt)
    f20 = f_measure(shift(gt, 20), gt)
    assert 0.5 < f20 < f9 < 1.0
    # the same 9 px shift is within reach with a larger tolerance
    assert f_measure(shift(gt, 9), gt, bound_th=0.01) == 1.0  # ceil(9.80) = 10


def test_f_measure_two_different_objects(bike_objects):
    first, second = bike_objects
    assert j_measure(first, second) == 0.0  # disjoint
    assert 0.0 < f_measure(first, second) < 0.5  # their boundaries touch only in places
    assert f_measure(first, second) == pytest.approx(f_measure(second, first))


# --------------------------------------------------------------------------- J&F over a sequence


def test_jf_scores_hand_computed():
    gt = box(10, 10, (2, 6), (2, 6))
    shifted = box(10, 10, (2, 6), (5, 9))
    empty = np.zeros_like(gt)
    preds = [gt, shifted, empty]
    gts = [gt, gt, gt]
    # per frame (radius 1): identical (J 1, F 1), shifted (J 1/7, F 9/16), empty (J 0, F 0)
    res = jf_scores(preds, gts, bound_th=1)
    assert res["J_per_frame"] == pytest.approx([1.0, 1 / 7, 0.0])
    assert res["F_per_frame"] == pytest.approx([1.0, 9 / 16, 0.0])
    j_mean, f_mean = (1 + 1 / 7) / 3, (1 + 9 / 16) / 3  # 8/21, 25/48
    assert res["J"] == pytest.approx(j_mean)
    assert res["F"] == pytest.approx(f_mean)
    assert res["J&F"] == pytest.approx((j_mean + f_mean) / 2)

    # semi-supervised davis convention: only the middle frame is scored
    middle = jf_scores(np.stack(preds), torch.from_numpy(np.stack(gts)), bound_th=1, drop_first_last=True)
    assert middle["J_per_frame"] == pytest.approx([1 / 7])
    assert middle["J&F"] == pytest.approx((1 / 7 + 9 / 16) / 2)


def test_jf_scores_frame_count_mismatch():
    gt = box(10, 10, (2, 6), (2, 6))
    with pytest.raises(ValueError, match="preds has 1 frames but gts has 2"):
        jf_scores([gt], [gt, gt])
    with pytest.raises(ValueError, match="voids has 1 frames"):
        jf_scores([gt, gt], [gt, gt], voids=[None])


# --------------------------------------------------------------------------- COCO polygon decoding


def test_two_cats_decode_to_their_annotated_areas(two_cats):
    masks = {}
    for ann_id in (LEFT_CAT, RIGHT_CAT):
        ann = two_cats[ann_id]
        mask = decode_coco_polygons(ann["segmentation"], 480, 640)
        assert mask.shape == (480, 640) and mask.dtype == bool
        assert mask.sum() == pytest.approx(ann["area"], rel=0.01)
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
        assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        masks[ann_id] = mask
    assert iou(masks[LEFT_CAT], masks[RIGHT_CAT]) < 0.01


def test_refcocog_ref_masks_match_annotation_area():
    instances = json.loads(shared_path("refcocog_fixture", "instances.json").read_text())
    with shared_path("refcocog_fixture", "refs(umd).p").open("rb") as fh:
        refs = pickle.load(fh)
    images = {im["id"]: im for im in instances["images"]}
    anns = {a["id"]: a for a in instances["annotations"]}
    assert len(refs) == 15
    for ref in refs:
        ann = anns[ref["ann_id"]]
        image = images[ref["image_id"]]
        mask = decode_coco_polygons(ann["segmentation"], image["height"], image["width"])
        assert mask.shape == (image["height"], image["width"])
        assert mask.sum() == pytest.approx(ann["area"], rel=0.01), ref["ref_id"]


def test_overlapping_polygons_union_vs_refer_quirk():
    instances = json.loads(shared_path("refcocog_fixture", "instances.json").read_text())
    ann = next(a for a in instances["annotations"] if a["id"] == 228442)  # 2 polygons that overlap
    image = next(im for im in instances["images"] if im["id"] == ann["image_id"])
    h, w = image["height"], image["width"]
    union = decode_coco_polygons(ann["segmentation"], h, w)
    refer_style = decode_coco_polygons(ann["segmentation"], h, w, overlap="exactly_one")
    separately = [decode_coco_polygons([poly], h, w) for poly in ann["segmentation"]]
    np.testing.assert_array_equal(union, separately[0] | separately[1])
    # `mask == 1` after summing drops exactly the pixels both polygons cover
    np.testing.assert_array_equal(refer_style, separately[0] ^ separately[1])
    assert (separately[0] & separately[1]).sum() > 0


def test_decode_rle_inputs(two_cats):
    from pycocotools import mask as mask_utils

    cat = decode_coco_polygons(two_cats[LEFT_CAT]["segmentation"], 480, 640)
    rle = mask_utils.encode(np.asfortranarray(cat.astype(np.uint8)))
    rle_json = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as stored in JSON
    np.testing.assert_array_equal(decode_coco_polygons(rle_json, 480, 640), cat)

    # uncompressed RLE (iscrowd style), column-major runs on a 3x2 image: 1 off, 2 on, 3 off
    tiny = decode_coco_polygons({"size": [3, 2], "counts": [1, 2, 3]}, 3, 2)
    np.testing.assert_array_equal(tiny, [[False, False], [True, False], [True, False]])

    for wrong_size in (rle_json, {"size": [3, 2], "counts": [1, 2, 3]}):
        with pytest.raises(ValueError, match="size"):
            decode_coco_polygons(wrong_size, 2, 3)


def test_decode_drops_degenerate_polygons():
    # pycocotools would read a 4-number first polygon as an [x, y, w, h] box and fill it.
    mask = decode_coco_polygons([[0.0, 0.0, 10.0, 10.0]], 20, 20)
    assert mask.shape == (20, 20) and not mask.any()
    assert not decode_coco_polygons([], 5, 7).any()


def _brute_force_unsupervised(gt_labels, pred_labels):
    """The unsupervised assignment by trying every one: each ground-truth object gets a distinct
    predicted object (or an empty mask) so that the mean of (J + F) / 2 over objects is largest."""
    from itertools import permutations

    from refam.metrics import jf_scores

    gts = sorted({int(v) for f in gt_labels for v in np.unique(f)} - {0})
    preds = sorted({int(v) for f in pred_labels for v in np.unique(f)} - {0})
    options = preds + [None] * len(gts)
    best, best_total = None, -1.0
    for chosen in permutations(options, len(gts)):
        per = {}
        for g, p in zip(gts, chosen, strict=True):
            masks = [np.zeros_like(f, dtype=bool) if p is None else f == p for f in pred_labels]
            per[g] = jf_scores(masks, [f == g for f in gt_labels])["J&F"]
        total = sum(per.values())
        if total > best_total + 1e-12:
            best, best_total = dict(zip(gts, chosen, strict=True)), total
    return best, best_total / len(gts)


def test_davis_unsupervised_matches_swapped_predictions():
    """Two objects whose predictions carry each other's labels: the unsupervised protocol matches
    them across (J&F = 1 for both), as an exhaustive matching written here does."""
    from refam.metrics import davis_unsupervised, paint_labels

    rng = np.random.default_rng(3)
    frames = []
    for t in range(5):
        frame = np.zeros((40, 60), dtype=np.int32)
        frame[5:20, 4 + t : 24 + t] = 1
        frame[22:38, 30 - t : 55 - t] = 2
        frames.append(frame)
    swapped = paint_labels({1: [f == 2 for f in frames], 2: [f == 1 for f in frames]})
    result = davis_unsupervised(frames, swapped)
    assert result[1]["matched"] == 2 and result[2]["matched"] == 1
    assert all(r["J&F"] == pytest.approx(1.0) for r in result.values())
    # A noisy three-proposal prediction: the same assignment and score as the exhaustive search.
    noisy = []
    for f in frames:
        p = np.where(rng.random(f.shape) < 0.1, 3, np.where(f == 1, 2, np.where(f == 2, 1, 0)))
        noisy.append(p.astype(np.int32))
    result = davis_unsupervised(frames, noisy)
    expected, mean = _brute_force_unsupervised(frames, noisy)
    assert {g: r["matched"] for g, r in result.items()} == expected
    assert np.mean([r["J&F"] for r in result.values()]) == pytest.approx(mean)
    # A ground-truth object without any prediction scores against an empty mask.
    one = paint_labels({5: [f == 1 for f in frames]})
    result = davis_unsupervised(frames, one)
    assert result[1]["matched"] == 5 and result[2]["matched"] is None and result[2]["J"] == 0.0


def test_paint_labels_later_objects_overwrite():
    from refam.metrics import paint_labels

    a = np.zeros((4, 4), dtype=bool)
    a[:2] = True
    b = np.zeros((4, 4), dtype=bool)
    b[1:3] = True
    (labels,) = paint_labels({1: [a], 2: [b]})
    assert labels[0].tolist() == [1] * 4 and labels[1].tolist() == [2] * 4 and labels[3].tolist() == [0] * 4
