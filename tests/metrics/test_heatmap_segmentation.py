"""Table 11's metrics as ConceptAttention (CA) computes them: hand-worked masks, CA's two call
patterns re-derived literally (the stacked-channel histograms), and sklearn's average precision
against a brute-force definition (ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from refam.metrics.heatmap_segmentation import (
    IGNORE,
    BinaryCounts,
    HeatmapSegmentationScores,
    average_precision,
    ca_imagenet_ap,
    ca_imagenet_counts,
    ca_prediction,
    ca_voc_ap,
    ca_voc_counts,
    confusion_counts,
    plain_counts,
    resize_labels,
)


def test_imagenet_counts_by_hand():
    # TP at (0,0), FP at (0,1), TN at (1,0) and (1,1)
    mask = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1, 0], [0, 0]])
    counts = confusion_counts(mask, gt)
    assert counts == BinaryCounts(tp=1, tn=2, fp=1, fn=0, ignored=0)
    ca = ca_imagenet_counts(counts)
    # 3 of 4 pixels agree; each channel of the stacked pair contributes them: 6 of 8
    assert (ca.correct, ca.labeled) == (6, 8)
    # both IoU bins pool TP of one channel with TN of the other: 3 / (8 - 3)
    assert ca.inter == (3, 3) and ca.union == (5, 5)
    scores = HeatmapSegmentationScores.over([ca])
    assert scores.pixel_accuracy == pytest.approx(0.75)
    assert scores.mean_iou == pytest.approx(0.6) == pytest.approx(0.75 / (2 - 0.75))
    plain = HeatmapSegmentationScores.over([plain_counts(counts)])
    # background 2 / (2 + 1), foreground 1 / (1 + 1)
    assert plain.iou == pytest.approx([2 / 3, 1 / 2])
    assert plain.mean_iou == pytest.approx(7 / 12) and plain.pixel_accuracy == pytest.approx(0.75)


def test_voc_counts_by_hand_with_ignore():
    gt = np.array([[1, 0, IGNORE], [1, 0, IGNORE]])
    mask = np.array([[1, 1, 1], [0, 0, 0]], bool)
    counts = confusion_counts(mask, gt)
    assert counts == BinaryCounts(tp=1, tn=1, fp=1, fn=1, ignored=2)
    ca = ca_voc_counts(counts)
    # correct: 2 per agreeing pixel; labeled: 2 per scored pixel + 1 per ignore pixel (its inverted channel)
    assert (ca.correct, ca.labeled) == (4, 10)
    assert ca.inter == (1, 1) and ca.union == (3, 3)  # bg: TN/(TN+FP+FN), fg: TP/(TP+FP+FN)
    scores = HeatmapSegmentationScores.over([ca])
    assert scores.pixel_accuracy == pytest.approx(0.4) and scores.mean_iou == pytest.approx(1 / 3)


def _literal_ca(pred: np.ndarray, target: np.ndarray, nclass: int = 2):
    """CA's ``batch_pix_accuracy`` and ``batch_intersection_union`` (argmax commented out) re-derived:
    labels shifted by one, 0 = unlabeled, a ``nclass``-bin histogram over [1, nclass]."""
    p, t = pred.astype(np.int64) + 1, target.astype(np.int64) + 1
    labeled = np.sum(t > 0)
    correct = np.sum((p == t) * (t > 0))
    p = p * (t > 0)
    inter = p * (p == t)
    hist = [np.histogram(a, bins=nclass, range=(1, nclass))[0] for a in (inter, p, t)]
    return correct, labeled, hist[0], hist[1] + hist[2] - hist[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_equal_cas_calls_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((9, 7)) > 0.5
    gt = (rng.random((9, 7)) > 0.6).astype(np.int64)
    counts = confusion_counts(mask, gt)
    m, g = mask.astype(np.int64), gt
    # ImageNet: everything on the stacked (1 - x, x) pairs
    correct, labeled, inter, union = _literal_ca(np.stack((1 - m, m)), np.stack((1 - g, g)))
    ca = ca_imagenet_counts(counts)
    assert (ca.correct, ca.labeled) == (correct, labeled)
    assert list(ca.inter) == inter.tolist() and list(ca.union) == union.tolist()
    # VOC: -1 ignore pixels; accuracy on the stacked pair, IoU on the plain mask
    g = np.where(rng.random((9, 7)) > 0.8, IGNORE, gt)
    counts = confusion_counts(mask, g)
    correct, labeled, _, _ = _literal_ca(np.stack((1 - m, m)), np.stack((1 - g, g)))
    _, _, inter, union = _literal_ca(m, g)
    ca = ca_voc_counts(counts)
    assert (ca.correct, ca.labeled) == (correct, labeled)
    assert list(ca.inter) == inter.tolist() and list(ca.union) == union.tolist()


def test_scores_accumulate_over_the_dataset_not_per_image():
    a = ca_voc_counts(BinaryCounts(tp=1, tn=0, fp=1, fn=0))  # fg IoU 1/2
    b = ca_voc_counts(BinaryCounts(tp=8, tn=2, fp=0, fn=0))  # fg IoU 1
    scores = HeatmapSegmentationScores()
    scores.add(a, ap=0.5)
    scores.add(b, ap=1.0)
    assert scores.iou[1] == pytest.approx(9 / 10)  # (1 + 8) / (2 + 8), not mean(1/2, 1)
    assert scores.iou[0] == pytest.approx(2 / 3)  # (0 + 2) / (1 + 2)
    assert scores.pixel_accuracy == pytest.approx(2 * 11 / (2 * 12))
    assert scores.mean_ap == pytest.approx(0.75)


def test_average_precision_by_hand():
    # ranked 1, 0, 1, 0: recall 1/2 at precision 1, then recall 1 at precision 2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a tie is one threshold: 0.5 brings one positive and one negative together
    assert average_precision([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([0, 0], [0.3, 0.1]) == 0.0  # no positive: CA's nan_to_num gives 0
    assert average_precision([1, 1], [0.3, 0.3]) == 1.0
    assert average_precision([1, 0], [np.nan, 0.2]) == pytest.approx(0.5)  # nan reads as 0
    with pytest.raises(ValueError, match="2 targets but 3 scores"):
        average_precision([1, 0], [0.1, 0.2, 0.3])


def _brute_force_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """The definition, one threshold at a time: predict positive at score >= t, t from high to low."""
    total = 0.0
    previous_recall = 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        tp = np.sum(predicted & targets)
        recall = tp / targets.sum()
        total += (recall - previous_recall) * tp / predicted.sum()
        previous_recall = recall
    return total


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_the_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random(300) > 0.7
    scores = np.round(rng.random(300) + 0.3 * targets, 1)  # rounded: many ties
    assert average_precision(targets, scores) == pytest.approx(_brute_force_ap(targets, scores), abs=1e-12)


def test_ca_ap_ranks_both_channels_together():
    gt = np.array([[1, 0]])
    assert ca_imagenet_ap(np.array([[1.0, 0.0]]), gt) == pytest.approx(1.0)
    # inverted: scores (1-c, c) = (1, 0 | 0, 1) against targets (0, 1 | 1, 0): both 1s negative,
    # then both 0s positive at once -> precision 1/2 at recall 1
    assert ca_imagenet_ap(np.array([[0.0, 1.0]]), gt) == pytest.approx(0.5)
    # VOC drops ignore pixels from both channels: the adversarial scores there do not count
    c = np.array([[1.0, 0.0, 0.0, 1.0]])
    voc_gt = np.array([[1, 0, IGNORE, IGNORE]])
    assert ca_voc_ap(c, voc_gt) == pytest.approx(1.0)
    assert ca_voc_ap(c, voc_gt) == pytest.approx(ca_imagenet_ap(c[:, :2], voc_gt[:, :2]))
    with pytest.raises(ValueError, match="one shape"):
        ca_imagenet_ap(np.zeros((2, 2)), np.zeros((3, 3)))


def test_ca_prediction_cuts_the_grid_at_its_mean_then_resizes_nearest():
    grid = np.array([[0.0, 1.0], [0.2, 0.9]])  # mean 0.525
    mask, scores = ca_prediction(grid, size=4)
    assert mask.tolist() == [[False, False, True, True]] * 4
    assert scores[:2, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]] and scores[3, 3] == pytest.approx(0.9)
    flat, _ = ca_prediction(np.full((3, 3), 0.4), size=6)
    assert not flat.any()  # strictly above the mean, as CA's `>`
    with pytest.raises(ValueError, match="2-D"):
        ca_prediction(np.zeros(5))


def test_resize_labels_is_pil_nearest():
    labels = np.array([[0, 12], [255, 3]], dtype=np.uint8)
    big = resize_labels(labels, 4)
    assert big.tolist() == [[0, 0, 12, 12], [0, 0, 12, 12], [255, 255, 3, 3], [255, 255, 3, 3]]
    with pytest.raises(ValueError, match="class indices"):
        resize_labels(np.array([[300]]), 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_ca_imagenet_miou_is_acc_over_two_minus_acc(seed):
    rng = np.random.default_rng(seed)
    scores = HeatmapSegmentationScores()
    for _ in range(4):
        scores.add(ca_imagenet_counts(confusion_counts(rng.random((8, 8)) > 0.5, (rng.random((8, 8)) > 0.3).astype(int))))
    acc = scores.pixel_accuracy
    assert scores.iou[0] == pytest.approx(scores.iou[1])
    assert scores.mean_iou == pytest.approx(acc / (2 - acc))
