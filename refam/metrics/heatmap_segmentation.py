"""Heatmap segmentation without SAM (the paper's Table 11), scored as ConceptAttention (CA) scores it.

CA (Helbling et al. 2025) evaluates a heatmap against a binary ground truth at 224x224 with the
metrics of Chefer et al.'s ``utils/metrices.py`` (their argmax commented out), accumulated over the
dataset one image at a time:

* ``pixAcc = sum(correct) / sum(labeled)``, ``IoU_c = sum(inter_c) / sum(union_c)`` per class,
  ``mIoU = mean_c IoU_c``, ``mAP = mean over images of the image's average precision``.

What "correct", "labeled", "inter" and "union" count depends on how CA calls those functions, and the
two datasets are called differently, so each protocol has its own function:

* ImageNet-Segmentation (:func:`ca_imagenet_counts`): both the prediction and the target are the
  stacked two channels ``(1 - m, m)``. Pixel accuracy is the plain one; but with no argmax the IoU
  histogram pools the inverted channel with the other, so both classes get ``(TP+TN) / (2N-(TP+TN))``
  and CA's mIoU is ``acc / (2 - acc)``. :func:`plain_counts` gives the usual two-class IoU beside it.
* PascalVOC single class (:func:`ca_voc_counts`): pixel accuracy on the stacked channels, where an
  ignore pixel (255 in VOC) is labeled in the inverted channel but never correct:
  ``2(TP+TN) / (2 N_valid + N_ignore)``; IoU on the unstacked mask: background and foreground IoU
  with ignore pixels left out.

Average precision is sklearn's ``average_precision_score`` (ties grouped), written here in numpy
(:func:`average_precision`), over the ``2·H·W`` values of ``(1 - c, c)`` against the one-hot target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CA_SIZE",
    "IGNORE",
    "BinaryCounts",
    "CaCounts",
    "HeatmapSegmentationScores",
    "average_precision",
    "ca_imagenet_ap",
    "ca_imagenet_counts",
    "ca_prediction",
    "ca_voc_ap",
    "ca_voc_counts",
    "confusion_counts",
    "plain_counts",
    "resize_labels",
]

CA_SIZE = 224  # CA scores every image at 224x224: the ground truth and the heatmap are resized to it
IGNORE = -1  # a ground-truth pixel that is not scored (VOC's 255 "void" border)

# CA adds np.spacing(1) to every denominator; kept so an empty class scores 0, as in CA's tables.
_EPS = float(np.spacing(1, dtype=np.float64))


@dataclass(frozen=True)
class BinaryCounts:
    """One image's confusion of a binary prediction with a binary ground truth (ignore pixels apart)."""

    tp: int
    tn: int
    fp: int
    fn: int
    ignored: int = 0

    @property
    def valid(self) -> int:
        return self.tp + self.tn + self.fp + self.fn


@dataclass(frozen=True)
class CaCounts:
    """What one image adds to the dataset totals: pixels correct and labeled, and per class
    (background, foreground) the intersection and union."""

    correct: int
    labeled: int
    inter: tuple[int, int]
    union: tuple[int, int]


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(
            f"prediction {pred.shape} and ground truth {gt.shape} must be 2-D maps of one shape; "
            f"resize both to {CA_SIZE}x{CA_SIZE} first (ca_prediction)"
        )


def confusion_counts(mask: np.ndarray, gt: np.ndarray) -> BinaryCounts:
    """``mask``: predicted foreground (bool). ``gt``: 1 foreground, 0 background, :data:`IGNORE` not scored."""
    mask, gt = np.asarray(mask, dtype=bool), np.asarray(gt)
    _check_pair(mask, gt)
    valid = gt != IGNORE
    fg = gt == 1
    bg = valid & ~fg
    return BinaryCounts(
        tp=int(np.count_nonzero(mask & fg)),
        tn=int(np.count_nonzero(~mask & bg)),
        fp=int(np.count_nonzero(mask & bg)),
        fn=int(np.count_nonzero(~mask & fg)),
        ignored=int(np.count_nonzero(~valid)),
    )


def ca_imagenet_counts(c: BinaryCounts) -> CaCounts:
    """CA's ImageNet-Segmentation call: ``batch_pix_accuracy`` and ``batch_intersection_union(nclass=2)``
    on ``stack((1-mask, mask))`` against ``stack((1-gt, gt))``. Each class histogram bin collects the
    matching zeros (or ones) of both channels: TP from one channel and TN from the other."""
    agree = c.tp + c.tn
    n = c.valid
    return CaCounts(correct=2 * agree, labeled=2 * n, inter=(agree, agree), union=(2 * n - agree, 2 * n - agree))


def ca_voc_counts(c: BinaryCounts) -> CaCounts:
    """CA's PascalVOC single-class call: pixel accuracy on the stacked channels, whose inverted
    channel holds ``1 - (-1) = 2`` at an ignore pixel (labeled, never correct); IoU on the mask itself,
    where ignore pixels drop out: background ``TN / (TN+FP+FN)``, foreground ``TP / (TP+FP+FN)``."""
    return CaCounts(
        correct=2 * (c.tp + c.tn),
        labeled=2 * c.valid + c.ignored,
        inter=(c.tn, c.tp),
        union=(c.tn + c.fp + c.fn, c.tp + c.fp + c.fn),
    )


def plain_counts(c: BinaryCounts) -> CaCounts:
    """The usual two-class scores: accuracy over scored pixels, background and foreground IoU."""
    return CaCounts(
        correct=c.tp + c.tn,
        labeled=c.valid,
        inter=(c.tn, c.tp),
        union=(c.tn + c.fp + c.fn, c.tp + c.fp + c.fn),
    )


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` for binary ``targets``: ``sum_n (R_n - R_{n-1}) P_n``
    over the distinct scores in descending order (tied scores form one threshold). No positive
    target gives 0 (CA passes sklearn's value through ``nan_to_num``)."""
    targets = np.asarray(targets).ravel().astype(bool)
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel())
    if targets.shape != scores.shape:
        raise ValueError(f"average_precision: {targets.size} targets but {scores.size} scores; give one score per target")
    if targets.size == 0 or not targets.any():
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], targets[order]
    # the last index of each run of equal scores: one precision/recall point per distinct threshold
    ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tps = np.cumsum(hits)[ends]
    precision = tps / (ends + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ca_imagenet_ap(scores: np.ndarray, gt: np.ndarray) -> float:
    """AP over ``stack((1-c, c))`` against ``stack((1-gt, gt))``: both channels in one ranking."""
    scores, gt = np.asarray(scores, dtype=np.float64), np.asarray(gt)
    _check_pair(scores, gt)
    fg = gt == 1
    return average_precision(np.concatenate([~fg.ravel(), fg.ravel()]), np.concatenate([1 - scores.ravel(), scores.ravel()]))


def ca_voc_ap(scores: np.ndarray, gt: np.ndarray) -> float:
    """:func:`ca_imagenet_ap` with the ignore pixels dropped from both channels."""
    scores, gt = np.asarray(scores, dtype=np.float64), np.asarray(gt)
    _check_pair(scores, gt)
    valid = gt != IGNORE
    return ca_imagenet_ap(scores[valid][None, :], gt[valid][None, :])


def _nearest(grid: np.ndarray, size: int) -> np.ndarray:
    import torch

    # torch's nearest rule (source index floor(i * in/out)), the call CA makes on its maps
    t = torch.as_tensor(np.asarray(grid, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy()


def resize_labels(labels: np.ndarray, size: int = CA_SIZE) -> np.ndarray:
    """A label map (class indices, 0-255) at ``size`` x ``size`` as CA's ``transforms.Resize(NEAREST)``
    makes it: PIL's nearest resize, which is what torchvision calls on a PIL image."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"labels must be a 2-D map of class indices 0-255, got shape {labels.shape}")
    resized = Image.fromarray(labels.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized)


def ca_prediction(grid: np.ndarray, size: int = CA_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """CA's mask and scores from a heatmap on the patch grid: ``mask = grid > grid.mean()`` on the
    grid, then both nearest-resized to ``size`` x ``size``."""
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2 or not grid.size:
        raise ValueError(f"heatmap grid must be a non-empty 2-D map, got shape {grid.shape}")
    mask = grid > grid.mean()
    return _nearest(mask.astype(np.float32), size) > 0.5, _nearest(grid, size)


@dataclass
class HeatmapSegmentationScores:
    """Dataset totals as CA accumulates them (batch size 1): add one image's :class:`CaCounts` and AP."""

    correct: int = 0
    labeled: int = 0
    inter: list[int] = field(default_factory=lambda: [0, 0])
    union: list[int] = field(default_factory=lambda: [0, 0])
    aps: list[float] = field(default_factory=list)

    def add(self, counts: CaCounts, ap: float | None = None) -> None:
        self.correct += counts.correct
        self.labeled += counts.labeled
        self.inter = [a + b for a, b in zip(self.inter, counts.inter, strict=True)]
        self.union = [a + b for a, b in zip(self.union, counts.union, strict=True)]
        if ap is not None:
            self.aps.append(float(ap))

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / (_EPS + self.labeled)

    @property
    def iou(self) -> list[float]:
        """Per class (background, foreground), dataset-level: summed intersections over summed unions."""
        return [i / (_EPS + u) for i, u in zip(self.inter, self.union, strict=True)]

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.iou))

    @property
    def mean_ap(self) -> float:
        return float(np.mean(self.aps)) if self.aps else float("nan")

    @classmethod
    def over(cls, counts: Sequence[CaCounts], aps: Sequence[float] = ()) -> HeatmapSegmentationScores:
        scores = cls()
        for c in counts:
            scores.add(c)
        scores.aps = [float(a) for a in aps]
        return scores
