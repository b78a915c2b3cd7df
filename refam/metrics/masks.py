"""Masks as the metrics read them: numpy arrays or torch tensors, boolean, integer (nonzero =
foreground) or floating point (``> 0.5`` = foreground), always 2-D ``(H, W)``."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np

__all__ = ["MaskLike", "as_bool_mask", "pred_gt"]

# Anything np.asarray understands, plus torch tensors (converted without importing torch).
MaskLike: TypeAlias = Any


def as_bool_mask(mask: MaskLike, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
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


def pred_gt(pred: MaskLike, gt: MaskLike) -> tuple[np.ndarray, np.ndarray]:
    gt_b = as_bool_mask(gt, "gt")
    return as_bool_mask(pred, "pred", gt_b.shape), gt_b
