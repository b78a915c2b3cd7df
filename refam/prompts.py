"""Heatmap -> the segmenter's prompt: positive points by a named strategy, negative points, a box.

The strategies are :data:`refam.variants.POINT_STRATEGIES`; they read the heatmap's regions
(:mod:`refam.regions`). Points are :class:`refam.points.Point` in original-image pixels (``x`` the
column, ``y`` the row, continuous, as :meth:`ImageGeometry.patch_centre` gives them); a box is
``(x0, y0, x1, y1)`` in the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from refam.attention import ImageGeometry
from refam.points import Point, argmax_point, peak_points
from refam.regions import HeatmapRegions, RegionRaster, find_regions, sample_heatmap
from refam.variants import DEFAULT_POINT_STRATEGY, POINT_STRATEGIES, check_choice

__all__ = [
    "MULTI_POINT_STRATEGIES",
    "CORE_DEPTH_FRACTION",
    "Prompt",
    "check_point_strategy",
    "choose_points",
    "choose_prompt",
    "negative_points",
    "positive_points",
]

#: Strategies that can give more than one positive point: ``argmax`` (separated peaks, as before)
#: and ``spread``; the others name one point.
MULTI_POINT_STRATEGIES = ("argmax", "spread")
#: The region's *core*: its pixels at least this fraction as deep as its deepest one. ``spread``
#: samples its further points there and ``centroid`` keeps the centroid only there: plain
#: farthest-point sampling runs to the rim, and a crescent's centroid can sit just inside its inner
#: edge — where the heatmap's outline is least sure, the edge the argmax falls on.
CORE_DEPTH_FRACTION = 0.5


def check_point_strategy(strategy: str, count: int = 1) -> str:
    """``strategy`` when it is a known one that can give ``count`` positive points."""
    check_choice("point_strategy", strategy, POINT_STRATEGIES)
    if count > 1 and strategy not in MULTI_POINT_STRATEGIES:
        raise ValueError(
            f"point_strategy {strategy!r} gives one positive point, but points={count}; use point_strategy "
            "'spread' (points inside the target region) or 'argmax' (separated peaks), or points=1"
        )
    return strategy


@dataclass(frozen=True)
class Prompt:
    """What the segmenter is given for one heatmap: positive points first, then negative ones."""

    points: tuple[Point, ...]
    labels: tuple[int, ...]  # 1 positive, 0 negative, one per point
    box: tuple[float, float, float, float] | None  # (x0, y0, x1, y1), original pixels
    regions: HeatmapRegions

    @property
    def positives(self) -> list[Point]:
        return [p for p, label in zip(self.points, self.labels, strict=True) if label == 1]

    def xy(self) -> list[tuple[float, float]]:
        return [(p.x, p.y) for p in self.points]


def _raster_point(regions: HeatmapRegions, raster: RegionRaster, i: int, j: int) -> Point:
    x, y = raster.centre(i, j)
    return regions.point_at(x, y, float(raster.values[i, j]))


def _deepest(raster: RegionRaster) -> tuple[int, int]:
    """The region pixel farthest from its edge; ties: the higher heatmap value, then row-major."""
    depth = raster.depth
    ties = np.where(depth >= depth.max(), raster.values, -np.inf)
    return divmod(int(np.argmax(ties)), depth.shape[1])


def _interior(regions: HeatmapRegions) -> Point:
    return _raster_point(regions, regions.raster, *_deepest(regions.raster))


def _centroid(regions: HeatmapRegions) -> Point:
    raster = regions.raster
    ci, cj = ndimage.center_of_mass(raster.mask)
    x, y = (cj + 0.5) * raster.pixel[1], (ci + 0.5) * raster.pixel[0]
    i, j = raster.index(x, y)
    if raster.depth[i, j] >= CORE_DEPTH_FRACTION * raster.depth.max():
        return regions.point_at(x, y, float(raster.values[i, j]))
    return _interior(regions)  # a ring or a crescent: the centroid is off the region or near its edge


def _upsampled_argmax(regions: HeatmapRegions) -> Point:
    # A bilinear surface peaks at a patch centre, so the best pixel is the one nearest the grid
    # argmax's centre, or a pixel of a plateau of equal patches (or of the clamped strip along the
    # image border); only the pixels within one patch of that centre are evaluated, at full size.
    (h, w), (height, width) = regions.geometry.grid, regions.geometry.original_size
    row, col = regions.peaks[regions.target]
    rows = slice(max(0, int((row - 1) * height / h)), min(height, int(np.ceil((row + 2) * height / h))))
    cols = slice(max(0, int((col - 1) * width / w)), min(width, int(np.ceil((col + 2) * width / w))))
    values = sample_heatmap(regions.grid, (height, width), rows, cols).numpy()
    cx, cy = regions.geometry.patch_centre(row, col)
    ys = np.arange(rows.start, rows.stop)[:, None] + 0.5
    xs = np.arange(cols.start, cols.stop)[None, :] + 0.5
    # Ties (a plateau): the pixel nearest the argmax patch's centre, not the plateau's corner.
    best = np.where(values >= values.max(), -np.hypot(xs - cx, ys - cy), -np.inf)
    i, j = divmod(int(np.argmax(best)), values.shape[1])
    return regions.point_at(float(xs[0, j]), float(ys[i, 0]), float(values[i, j]))


def _spread(regions: HeatmapRegions, count: int) -> list[Point]:
    """The interior point, then farthest-point sampling over the region's deep pixels."""
    raster = regions.raster
    first = _deepest(raster)
    points = [_raster_point(regions, raster, *first)]
    depth = raster.depth
    rows, cols = np.nonzero(depth >= CORE_DEPTH_FRACTION * depth.max())
    ys, xs = (rows + 0.5) * raster.pixel[0], (cols + 0.5) * raster.pixel[1]
    nearest = np.hypot(xs - points[0].x, ys - points[0].y)
    while len(points) < count:
        k = int(np.argmax(nearest))  # ties: the first in row-major order
        if nearest[k] <= 0.0:
            break  # every deep pixel is taken: a tiny region gives fewer points
        points.append(_raster_point(regions, raster, int(rows[k]), int(cols[k])))
        np.minimum(nearest, np.hypot(xs - xs[k], ys - ys[k]), out=nearest)
    return points


def positive_points(
    regions: HeatmapRegions,
    strategy: str = DEFAULT_POINT_STRATEGY,
    count: int = 1,
    min_distance: int = 2,
) -> list[Point]:
    """The ``count`` positive points of ``strategy`` (``argmax`` with ``count`` > 1: the separated
    peaks of :func:`refam.points.peak_points`, ``min_distance`` patches apart)."""
    check_point_strategy(strategy, count)
    if strategy == "argmax":
        if count > 1:
            return peak_points(regions.grid, regions.geometry, count, min_distance)
        return [argmax_point(regions.grid, regions.geometry)]
    if strategy == "upsampled_argmax":
        return [_upsampled_argmax(regions)]
    if strategy == "interior":
        return [_interior(regions)]
    if strategy == "centroid":
        return [_centroid(regions)]
    return _spread(regions, count)


def negative_points(regions: HeatmapRegions, count: int) -> list[Point]:
    """Up to ``count`` points, one per other region at its maximum's patch centre, strongest first."""
    return [regions.peak_point(label) for label in regions.others[: max(count, 0)]]


def choose_prompt(
    grid: torch.Tensor,
    geometry: ImageGeometry,
    *,
    strategy: str = DEFAULT_POINT_STRATEGY,
    count: int = 1,
    min_distance: int = 2,
    negatives: int = 0,
    box: bool = False,
) -> Prompt:
    """The segmenter's prompt for one heatmap grid ``[h, w]``: ``count`` positive points by
    ``strategy``, up to ``negatives`` negative points, the target region's box if ``box``."""
    regions = find_regions(grid, geometry)
    positives = positive_points(regions, strategy, count, min_distance)
    negative = negative_points(regions, negatives)
    return Prompt(
        points=(*positives, *negative),
        labels=(1,) * len(positives) + (0,) * len(negative),
        box=regions.box() if box else None,
        regions=regions,
    )


def choose_points(
    grid: torch.Tensor,
    geometry: ImageGeometry,
    count: int = 1,
    min_distance: int = 2,
    strategy: str = DEFAULT_POINT_STRATEGY,
) -> list[Point]:
    """The segmenter's positive points for one heatmap grid by ``strategy``: with ``argmax`` the
    argmax, or ``count`` separated peaks."""
    return list(choose_prompt(grid, geometry, strategy=strategy, count=count, min_distance=min_distance).points)
