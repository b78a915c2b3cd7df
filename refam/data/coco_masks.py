"""COCO ground-truth masks: polygons or RLE decoded the way the ``refer`` toolkit does."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from refam.install_hints import missing_package

__all__ = ["decode_coco_polygons"]


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
