"""Referring image segmentation scores (RefCOCO/+/g), as fractions in ``[0, 1]``.

``overall_iou`` (oIoU, "cumulative IoU": sum of intersections over sum of unions across all
sentences), ``mean_iou`` (mIoU: mean of the per-sentence IoUs), point accuracy (does the predicted
point fall inside the target), and the ``RisScores`` accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from refam.metrics.masks import MaskLike, as_bool_mask, pred_gt

__all__ = [
    "RisScores",
    "intersection_union",
    "iou",
    "mean_iou",
    "overall_iou",
    "point_accuracy",
    "point_in_mask",
]


def intersection_union(pred: MaskLike, gt: MaskLike) -> tuple[int, int]:
    """Pixel counts ``(|pred & gt|, |pred | gt|)``."""
    p, g = pred_gt(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def iou(pred: MaskLike, gt: MaskLike) -> float:
    """Intersection over union; 1.0 when both masks are empty (the davis2017 convention).

    LAVT/CRIS/HybridGL score the both-empty case 0.0 instead; it cannot occur on RefCOCO/+/g,
    where every referred object has a nonempty mask, so the choice changes no published number.
    """
    inter, union = intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


class RisScores:
    """Accumulates referring-image-segmentation scores sentence by sentence.

    ``oiou`` = sum(I) / sum(U) over all sentences, so large objects weigh more; ``miou`` = mean of
    per-sentence IoU, every sentence weighs the same. ``point_accuracy`` counts only the sentences
    added with a point. All are fractions in [0, 1]; an empty accumulator reports ``nan``.
    """

    def __init__(self) -> None:
        self._ious: list[float] = []
        self._inter = 0
        self._union = 0
        self._point_hits = 0
        self._point_count = 0

    def add(self, pred: MaskLike, gt: MaskLike, point: Sequence[float] | None = None) -> float:
        """Add one sentence's prediction (and optional predicted ``(x, y)`` point); return its IoU."""
        p, g = pred_gt(pred, gt)
        inter, union = int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))
        value = 1.0 if union == 0 else inter / union
        self._ious.append(value)
        self._inter += inter
        self._union += union
        if point is not None:
            self._point_count += 1
            self._point_hits += int(point_in_mask(point, g))
        return value

    @property
    def count(self) -> int:
        return len(self._ious)

    @property
    def ious(self) -> tuple[float, ...]:
        """Per-sentence IoUs in the order they were added."""
        return tuple(self._ious)

    @property
    def oiou(self) -> float:
        if not self._ious:
            return math.nan
        # Only reachable when every pair so far was empty/empty, each of which scores IoU 1.
        return 1.0 if self._union == 0 else self._inter / self._union

    @property
    def miou(self) -> float:
        return float(np.mean(self._ious)) if self._ious else math.nan

    @property
    def point_accuracy(self) -> float:
        return self._point_hits / self._point_count if self._point_count else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {
            "oIoU": self.oiou,
            "mIoU": self.miou,
            "point_accuracy": self.point_accuracy,
            "count": self.count,
        }


def _scores_from_pairs(pairs: Iterable[tuple[MaskLike, MaskLike]]) -> RisScores:
    scores = RisScores()
    for pred, gt in pairs:
        scores.add(pred, gt)
    if scores.count == 0:
        raise ValueError("pairs is empty: no (pred, gt) masks to score")
    return scores


def overall_iou(pairs: Iterable[tuple[MaskLike, MaskLike]]) -> float:
    """oIoU (cumulative IoU) over ``(pred, gt)`` pairs: sum of intersections / sum of unions."""
    return _scores_from_pairs(pairs).oiou


def mean_iou(pairs: Iterable[tuple[MaskLike, MaskLike]]) -> float:
    """mIoU over ``(pred, gt)`` pairs: the mean of the per-pair IoUs."""
    return _scores_from_pairs(pairs).miou


def point_in_mask(point_xy: Sequence[float], mask: MaskLike) -> bool:
    """Whether the pixel containing ``point_xy = (x, y)`` is foreground.

    x is the column and y the row, in pixels; the pixel containing a fractional point is
    ``(floor(y), floor(x))``, so pixel (r, c) covers [c, c + 1) x [r, r + 1). Points outside the
    image (or not finite) are False.
    """
    m = as_bool_mask(mask, "mask")
    if len(point_xy) != 2:
        raise ValueError(f"point_xy must be (x, y), got {point_xy!r}")
    x, y = float(point_xy[0]), float(point_xy[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    col, row = math.floor(x), math.floor(y)
    height, width = m.shape
    return 0 <= row < height and 0 <= col < width and bool(m[row, col])


def point_accuracy(points: Sequence[Sequence[float]], masks: Sequence[MaskLike]) -> float:
    """Fraction of ``(x, y)`` points that fall inside their mask."""
    if len(points) != len(masks):
        raise ValueError(f"points has {len(points)} entries but masks has {len(masks)}")
    if len(points) == 0:
        raise ValueError("points is empty")
    hits = sum(point_in_mask(p, m) for p, m in zip(points, masks, strict=True))
    return hits / len(points)
