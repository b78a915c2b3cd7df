"""Evaluation metrics for referring image and video segmentation.

All scores are fractions in ``[0, 1]``; papers usually print them multiplied by 100.

Image (RefCOCO/+/g): ``overall_iou`` (oIoU, "cumulative IoU": sum of intersections over sum of
unions across all sentences), ``mean_iou`` (mIoU: mean of the per-sentence IoUs), point accuracy
(does the predicted point fall inside the target), and the ``RisScores`` accumulator.

Video (Ref-DAVIS17): region similarity J and boundary F-measure with the conventions of the
official ``davis2017-evaluation`` package (``davis2017/metrics.py``), and ``jf_scores`` for one
object sequence.

Masks may be numpy arrays or torch tensors, boolean, integer (nonzero = foreground) or
floating point (``> 0.5`` = foreground), always 2-D ``(H, W)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import cv2
import numpy as np

from refam.install_hints import missing_package

# Anything np.asarray understands, plus torch tensors (converted without importing torch).
MaskLike: TypeAlias = Any

__all__ = [
    "RisScores",
    "boundary_map",
    "boundary_radius",
    "davis_unsupervised",
    "decode_coco_polygons",
    "f_measure",
    "intersection_union",
    "iou",
    "j_measure",
    "jf_scores",
    "mean_iou",
    "overall_iou",
    "paint_labels",
    "point_accuracy",
    "point_in_mask",
]


def _as_bool(mask: MaskLike, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Convert ``mask`` to a 2-D numpy bool array; ``shape`` is the shape it must match."""
    if hasattr(mask, "detach") and hasattr(mask, "is_floating_point"):
        # Threshold on the torch side: bf16/cuda tensors have no direct numpy conversion.
        tensor = mask.detach()
        tensor = tensor > 0.5 if tensor.is_floating_point() else tensor != 0
        arr = tensor.cpu().numpy()
    else:
        arr = np.asarray(mask)
        if arr.dtype != np.bool_:
            # A 0-1 float map (soft mask, resized mask) must not count 0.01 as foreground.
            arr = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr != 0
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {tuple(arr.shape)}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but the other mask has shape {tuple(shape)}")
    return arr


def _pred_gt(pred: MaskLike, gt: MaskLike) -> tuple[np.ndarray, np.ndarray]:
    gt_b = _as_bool(gt, "gt")
    return _as_bool(pred, "pred", gt_b.shape), gt_b


# --------------------------------------------------------------------------- image metrics


def intersection_union(pred: MaskLike, gt: MaskLike) -> tuple[int, int]:
    """Pixel counts ``(|pred & gt|, |pred | gt|)``."""
    p, g = _pred_gt(pred, gt)
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
        p, g = _pred_gt(pred, gt)
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
    m = _as_bool(mask, "mask")
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


# --------------------------------------------------------------------------- video metrics (DAVIS)


def j_measure(pred: MaskLike, gt: MaskLike, void: MaskLike | None = None) -> float:
    """Region similarity J: IoU ignoring ``void`` pixels; 1.0 when nothing is left in the union."""
    p, g = _pred_gt(pred, gt)
    keep = ~_as_bool(void, "void", g.shape) if void is not None else np.ones_like(g)
    union = np.count_nonzero((p | g) & keep)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g & keep) / union)


def boundary_radius(shape: Sequence[int], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels for the boundary F-measure.

    davis2017: ``bound_th`` below 1 is a fraction of the image diagonal (rounded up), otherwise a
    pixel count. For 854x480 frames ``ceil(0.008 * 979.65) = 8``.
    """
    if bound_th >= 1:
        return int(bound_th)
    height, width = shape[0], shape[1]
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_map(mask: MaskLike) -> np.ndarray:
    """One-pixel-wide boundary of a mask, as davis2017's ``_seg2bmap`` (Martin et al.) draws it.

    A pixel is boundary when it differs from its east, south or south-east neighbour, so the line
    sits half a pixel towards the origin. On the last row only the east neighbour is compared, on
    the last column only the south one, and the bottom-right pixel is never boundary; hence a
    mask filling the whole frame has no boundary at all.
    """
    seg = _as_bool(mask, "mask")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def _disk(radius: int) -> np.ndarray:
    # Same footprint as skimage.morphology.disk(radius): x^2 + y^2 <= r^2.
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def _dilate(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def f_measure(pred: MaskLike, gt: MaskLike, void: MaskLike | None = None, bound_th: float = 0.008) -> float:
    """Boundary F-measure between ``pred`` and ``gt``, as davis2017's ``f_measure``.

    Boundary pixels of each mask (void pixels removed first) count as matched when they lie within
    ``boundary_radius`` pixels (disk) of the other mask's boundary. With no boundary in ``pred``
    precision is 1 and recall 0; with none in ``gt`` precision 0, recall 1; with neither, both 1.
    So an empty prediction against a nonempty target scores 0, and empty against empty scores 1.
    """
    p, g = _pred_gt(pred, gt)
    if void is not None:
        keep = ~_as_bool(void, "void", g.shape)
        p, g = p & keep, g & keep
    kernel = _disk(boundary_radius(g.shape, bound_th))

    pred_b = boundary_map(p)
    gt_b = boundary_map(g)
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))

    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        pred_dil = _dilate(pred_b, kernel)
        gt_dil = _dilate(gt_b, kernel)
        precision = np.count_nonzero(pred_b & gt_dil) / n_pred
        recall = np.count_nonzero(gt_b & pred_dil) / n_gt

    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _frames(masks: Any, name: str) -> list[Any]:
    # A (T, H, W) array/tensor iterates over frames just like a list of (H, W) masks.
    frames = list(masks)
    if not frames:
        raise ValueError(f"{name} has no frames")
    return frames


def jf_scores(
    preds: Sequence[MaskLike] | MaskLike,
    gts: Sequence[MaskLike] | MaskLike,
    voids: Sequence[MaskLike | None] | MaskLike | None = None,
    *,
    bound_th: float = 0.008,
    drop_first_last: bool = False,
) -> dict[str, Any]:
    """J, F and J&F for one object over one video, following davis2017-evaluation.

    Returns ``{"J_per_frame", "F_per_frame", "J", "F", "J&F"}`` (lists of floats and their means;
    ``J&F = (J + F) / 2``). Frames: davis2017-evaluation scores *all* frames for the unsupervised
    task, which is how Ref-DAVIS17 is evaluated (ReferFormer's ``eval_davis.py`` and the methods
    comparing to it call it with ``task="unsupervised"``), so that is the default. Its
    semi-supervised task drops the first frame (given as input) and the last one; pass
    ``drop_first_last=True`` for that. A dataset's J&F is the mean of these per-object values.
    """
    pred_frames = _frames(preds, "preds")
    gt_frames = _frames(gts, "gts")
    if len(pred_frames) != len(gt_frames):
        raise ValueError(f"preds has {len(pred_frames)} frames but gts has {len(gt_frames)}")
    void_frames = [None] * len(gt_frames) if voids is None else list(voids)
    if len(void_frames) != len(gt_frames):
        raise ValueError(f"voids has {len(void_frames)} frames but gts has {len(gt_frames)}")
    if drop_first_last:
        if len(gt_frames) < 3:
            raise ValueError("drop_first_last needs at least 3 frames")
        pred_frames, gt_frames, void_frames = pred_frames[1:-1], gt_frames[1:-1], void_frames[1:-1]

    j_values = [j_measure(p, g, v) for p, g, v in zip(pred_frames, gt_frames, void_frames, strict=True)]
    f_values = [
        f_measure(p, g, v, bound_th=bound_th)
        for p, g, v in zip(pred_frames, gt_frames, void_frames, strict=True)
    ]
    j_mean = float(np.mean(j_values))
    f_mean = float(np.mean(f_values))
    return {
        "J_per_frame": j_values,
        "F_per_frame": f_values,
        "J": j_mean,
        "F": f_mean,
        "J&F": (j_mean + f_mean) / 2,
    }


def paint_labels(objects: dict[int, Sequence[MaskLike]]) -> list[np.ndarray]:
    """Per-object frame masks -> one label map per frame (0 = background), painted in label order
    so a later object overwrites an earlier one where they overlap (how DAVIS-style label PNGs are
    written from per-object predictions)."""
    labels = sorted(objects)
    if not labels:
        return []
    frames = [_frames(objects[label], f"object {label}") for label in labels]
    n = len(frames[0])
    if any(len(f) != n for f in frames):
        raise ValueError("every object needs the same number of frames")
    out = []
    for t in range(n):
        shape = _as_bool(frames[0][t], "mask").shape
        canvas = np.zeros(shape, dtype=np.int32)
        for label, masks in zip(labels, frames, strict=True):
            canvas[_as_bool(masks[t], f"object {label}", shape)] = label
        out.append(canvas)
    return out


def davis_unsupervised(
    gt_labels: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray], *, bound_th: float = 0.008
) -> dict[int, dict[str, Any]]:
    """davis2017-evaluation's unsupervised task on one video: every ground-truth object (label of
    ``gt_labels``) is scored against the predicted object (label of ``pred_labels``) that the
    Hungarian method assigns to it, maximising the mean over pairs of (J + F) / 2 over all frames; an
    object left without a prediction is scored against an empty mask. Returns per ground-truth label
    ``{"J", "F", "J&F", "matched"}`` (``matched``: the predicted label, or None)."""
    from scipy.optimize import linear_sum_assignment

    if len(gt_labels) != len(pred_labels):
        raise ValueError(f"{len(gt_labels)} ground-truth frames but {len(pred_labels)} predicted frames")
    gt_ids = sorted({int(v) for frame in gt_labels for v in np.unique(frame)} - {0})
    pred_ids = sorted({int(v) for frame in pred_labels for v in np.unique(frame)} - {0})
    candidates: list[int | None] = [*pred_ids, *[None] * max(0, len(gt_ids) - len(pred_ids))]
    # Each predicted object's frames, and each pair's score, once: the padding columns share both.
    pred_masks = {p: [np.zeros_like(f, dtype=bool) if p is None else f == p for f in pred_labels] for p in candidates}
    scores: dict[tuple[int, int], dict[str, Any]] = {}
    table = np.zeros((len(gt_ids), len(candidates)))
    for i, g in enumerate(gt_ids):
        gts = [frame == g for frame in gt_labels]
        by_pred = {p: jf_scores(masks, gts, bound_th=bound_th) for p, masks in pred_masks.items()}
        for j, p in enumerate(candidates):
            scores[(i, j)] = by_pred[p]
            table[i, j] = by_pred[p]["J&F"]
    rows, cols = linear_sum_assignment(-table)
    return {
        gt_ids[i]: {
            "J": scores[(i, j)]["J"],
            "F": scores[(i, j)]["F"],
            "J&F": scores[(i, j)]["J&F"],
            "matched": candidates[j],
        }
        for i, j in zip(rows, cols, strict=True)
    }


# --------------------------------------------------------------------------- COCO ground truth


def decode_coco_polygons(
    segmentation: list[list[float]] | dict[str, Any],
    height: int,
    width: int,
    *,
    overlap: Literal["union", "exactly_one"] = "union",
) -> np.ndarray:
    """Decode a COCO ``segmentation`` (polygon list or RLE dict) into an ``(height, width)`` bool mask.

    Like the ``refer`` toolkit's ``getMask``, every polygon is rasterised by pycocotools and the
    rasters are summed. ``getMask`` returns that sum (uint8), and LAVT/CRIS/HybridGL then build
    the ground truth with ``annot[mask == 1] = 1``, so pixels where two polygons of the same object
    overlap (sum 2) silently drop out. ``overlap="union"`` (default) keeps them (sum > 0);
    ``overlap="exactly_one"`` reproduces that quirk when matching those papers' numbers.
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(missing_package("decode_coco_polygons", "pycocotools", "eval")) from err
    if overlap not in ("union", "exactly_one"):
        raise ValueError(f"overlap must be 'union' or 'exactly_one', got {overlap!r}")

    if isinstance(segmentation, dict):
        rle = segmentation
        # Checked before frPyObjects, which would silently adopt the height/width passed to it.
        if [int(s) for s in rle["size"]] != [height, width]:
            raise ValueError(f"segmentation RLE has size {rle['size']} but height, width = {height}, {width}")
        if isinstance(rle.get("counts"), list):
            # Uncompressed RLE (iscrowd annotations) must be compressed before decoding.
            rle = mask_utils.frPyObjects(rle, height, width)
        counts = _decode(mask_utils, rle)
    else:
        # frPyObjects reads a list whose first entry has exactly 4 numbers as a bbox, not a
        # polygon; polygons under 3 vertices have no area anyway, so drop them first.
        polygons = [list(map(float, poly)) for poly in segmentation if len(poly) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects(polygons, height, width)
        counts = _decode(mask_utils, rles).sum(axis=2)

    return counts == 1 if overlap == "exactly_one" else counts > 0


def _decode(mask_utils: Any, rle: Any) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools built against numpy 1 warns about __array__(copy=...) under numpy 2; harmless.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(np.int32)
