"""Video object segmentation scores (Ref-DAVIS17): region similarity J and boundary F-measure with
the conventions of the official ``davis2017-evaluation`` package (``davis2017/metrics.py``),
``jf_scores`` for one object sequence and the unsupervised task's matching of objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from refam.metrics.masks import MaskLike, as_bool_mask, pred_gt

__all__ = [
    "boundary_map",
    "boundary_radius",
    "davis_unsupervised",
    "f_measure",
    "j_measure",
    "jf_scores",
    "paint_labels",
]


def j_measure(pred: MaskLike, gt: MaskLike, void: MaskLike | None = None) -> float:
    """Region similarity J: IoU ignoring ``void`` pixels; 1.0 when nothing is left in the union."""
    p, g = pred_gt(pred, gt)
    keep = ~as_bool_mask(void, "void", g.shape) if void is not None else np.ones_like(g)
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
    seg = as_bool_mask(mask, "mask")
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
    p, g = pred_gt(pred, gt)
    if void is not None:
        keep = ~as_bool_mask(void, "void", g.shape)
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
        shape = as_bool_mask(frames[0][t], "mask").shape
        canvas = np.zeros(shape, dtype=np.int32)
        for label, masks in zip(labels, frames, strict=True):
            canvas[as_bool_mask(masks[t], f"object {label}", shape)] = label
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
    pred_masks = {
        p: [np.zeros_like(f, dtype=bool) if p is None else f == p for f in pred_labels] for p in candidates
    }
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
