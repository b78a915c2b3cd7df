"""The heatmap's regions: the connected parts of the latent grid where it is high.

The *target region* is the connected component (8-connectivity) of ``grid >= threshold`` that holds
the grid's maximum (the first maximum in row-major order on ties, as
:func:`refam.points.argmax_point` takes it); the other components are the *other regions*,
strongest peak first. The threshold is ``median + REGION_FRACTION * (max - median)`` of the grid.

At pixel level a region is smooth: its grid, with the other regions lowered to the grid's minimum,
is upsampled bilinearly (as :func:`refam.points.upsample_heatmap` does: half-pixel centres) and
thresholded again. Another region never shares a bilinear cell with the target (it is at least two
patches away, or the two would be connected), so lowering it changes nothing near the target; it
only keeps it out. The upsampling is evaluated a band of rows at a time, or on a raster of at most
RASTER_SIDE pixels a side, so no full-size float copy is ever held.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy import ndimage

from refam.attention import ImageGeometry
from refam.points import Point

__all__ = [
    "RASTER_SIDE",
    "REGION_FRACTION",
    "HeatmapRegions",
    "RegionRaster",
    "find_regions",
    "region_threshold",
    "sample_heatmap",
]

#: The target region is what rises above half-way from the heatmap's background level to its peak:
#: a peak's flanks there are as much object as background. The background level is the grid's
#: median, not its minimum: a referred object covers a minority of the image, and one cold patch (a
#: min-max-normalised map has one at 0) would otherwise pull the threshold down into the
#: background (on the toy world the region's IoU with the object is 0.71 against 0.62 with the
#: minimum). tests/test_prompts.py checks it on planted heatmaps.
REGION_FRACTION = 0.5
#: The largest side of the raster that point strategies search (deepest point, centroid, spread):
#: fine enough that a point is not quantised to patch centres, small enough to stay a few MB.
RASTER_SIDE = 1024
_BAND_ROWS = 256  # rows of full-size masks computed at once
_TOLERANCE = 1e-6  # bilinear weights round: a flat stretch must not dip under its own threshold

_EIGHT = np.ones((3, 3), dtype=bool)


def region_threshold(grid: torch.Tensor) -> float:
    """``median + REGION_FRACTION * (max - median)`` of the grid."""
    floor, peak = float(grid.flatten().median()), float(grid.max())
    return floor + REGION_FRACTION * (peak - floor)


def _weights(n_in: int, n_out: int, index: np.ndarray) -> torch.Tensor:
    """``[len(index), n_in]`` bilinear weights of output samples ``index`` (of ``n_out`` equal cells
    over the image) on ``n_in`` grid cells: PyTorch's ``align_corners=False`` rule, edges clamped."""
    src = np.maximum((index + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = np.clip(src - low, 0.0, 1.0)
    out = np.zeros((len(index), n_in), dtype=np.float64)
    rows = np.arange(len(index))
    np.add.at(out, (rows, low), 1.0 - frac)
    np.add.at(out, (rows, high), frac)
    return torch.from_numpy(out).float()


def sample_heatmap(
    grid: torch.Tensor, size: tuple[int, int], rows: slice | None = None, cols: slice | None = None
) -> torch.Tensor:
    """The bilinearly upsampled ``grid`` at the pixel centres of a ``size`` raster over the image,
    only ``rows`` x ``cols`` of it: equal to ``upsample_heatmap`` at the original size, without it."""
    (h, w), (height, width) = grid.shape, size
    ys = np.arange(height)[rows if rows is not None else slice(None)]
    xs = np.arange(width)[cols if cols is not None else slice(None)]
    return _weights(h, height, ys) @ grid.float() @ _weights(w, width, xs).T


def _bands(height: int) -> Iterator[slice]:
    for top in range(0, height, _BAND_ROWS):
        yield slice(top, min(top + _BAND_ROWS, height))


def raster_size(geometry: ImageGeometry) -> tuple[int, int]:
    """The original size, scaled down (aspect kept) so that no side exceeds RASTER_SIDE."""
    height, width = geometry.original_size
    scale = min(1.0, RASTER_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class RegionRaster:
    """The smooth target region on a raster over the image: ``mask`` and heatmap ``values``
    (``[Hr, Wr]``); raster pixel ``(i, j)`` covers ``pixel`` original pixels from ``(j, i) * pixel``."""

    mask: np.ndarray  # [Hr, Wr] bool
    values: np.ndarray  # [Hr, Wr] float32, the upsampled heatmap
    pixel: tuple[float, float]  # (height, width) of one raster pixel in original pixels

    def centre(self, i: int, j: int) -> tuple[float, float]:
        """(x, y) in original pixels of raster pixel (i, j)'s centre."""
        return (j + 0.5) * self.pixel[1], (i + 0.5) * self.pixel[0]

    def index(self, x: float, y: float) -> tuple[int, int]:
        """The raster pixel holding original point (x, y)."""
        rows, cols = self.mask.shape
        return min(int(y / self.pixel[0]), rows - 1), min(int(x / self.pixel[1]), cols - 1)

    @cached_property
    def depth(self) -> np.ndarray:
        """Distance in original pixels from each region pixel to the nearest pixel outside the
        region or the image (the image border counts as an edge: a point is kept off it too)."""
        padded = np.pad(self.mask, 1)
        return ndimage.distance_transform_edt(padded, sampling=self.pixel)[1:-1, 1:-1]


@dataclass(frozen=True)
class HeatmapRegions:
    """The components of ``grid >= threshold`` of one heatmap grid, and which one is the target."""

    grid: torch.Tensor  # [h, w] float32
    geometry: ImageGeometry
    threshold: float
    labels: np.ndarray  # [h, w] int32: 0 below the threshold, 1.. one per component
    target: int  # the label of the component holding the maximum
    others: tuple[int, ...]  # the other labels, strongest peak first (ties: row-major order)
    peaks: dict[int, tuple[int, int]]  # label -> (row, col) of its maximum

    def cells(self, label: int | None = None) -> np.ndarray:
        """``[h, w]`` bool: the grid cells of a region (default: the target)."""
        return self.labels == (self.target if label is None else label)

    def peak_point(self, label: int | None = None) -> Point:
        """The patch centre of a region's maximum (default: the target's, the argmax point)."""
        row, col = self.peaks[self.target if label is None else label]
        x, y = self.geometry.patch_centre(row, col)
        return Point(x=x, y=y, score=float(self.grid[row, col]), row=row, col=col)

    def point_at(self, x: float, y: float, score: float) -> Point:
        """A point at original pixel (x, y), with the patch it falls in."""
        (h, w), (height, width) = self.geometry.grid, self.geometry.original_size
        row, col = min(int(y * h / height), h - 1), min(int(x * w / width), w - 1)
        return Point(x=float(x), y=float(y), score=float(score), row=row, col=col)

    @cached_property
    def _target_grid(self) -> torch.Tensor:
        """The grid with the other regions lowered to its minimum (see the module docstring)."""
        others = torch.from_numpy((self.labels > 0) & (self.labels != self.target))
        return torch.where(others, self.grid.min(), self.grid)

    def mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``[H, W]`` bool: the smooth target region at ``size`` (default: the original image's),
        computed a band of rows at a time.

        Never empty: when a one-patch peak falls between the samples of a coarse ``size``, the
        samples whose nearest patch is a target cell stand in, else the one holding its peak.
        """
        height, width = size or self.geometry.original_size
        h, w = self.geometry.grid
        out = np.zeros((height, width), dtype=bool)
        for rows, band in self._smooth_bands((height, width)):
            out[rows] = band
        if not out.any():
            near_rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
            near_cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
            cells = self.cells()
            for rows in _bands(height):
                out[rows] = cells[np.ix_(near_rows[rows], near_cols)]
        if not out.any():
            row, col = self.peaks[self.target]
            out[min(int((row + 0.5) * height / h), height - 1), min(int((col + 0.5) * width / w), width - 1)] = True
        return out

    def _smooth_bands(self, size: tuple[int, int]) -> Iterator[tuple[slice, np.ndarray]]:
        """The bilinear target region at ``size``, a band of rows at a time (no fallbacks)."""
        (h, w), (height, width), grid = self.geometry.grid, size, self._target_grid
        cols = _weights(w, width, np.arange(width)).T
        for rows in _bands(height):
            band = _weights(h, height, np.arange(height)[rows]) @ grid @ cols
            yield rows, (band >= self.threshold - _TOLERANCE).numpy()

    @cached_property
    def raster(self) -> RegionRaster:
        """The smooth target region on a raster of at most RASTER_SIDE pixels a side."""
        size = raster_size(self.geometry)
        height, width = self.geometry.original_size
        return RegionRaster(
            mask=self.mask(size),
            values=sample_heatmap(self.grid, size).numpy(),
            pixel=(height / size[0], width / size[1]),
        )

    def box(self) -> tuple[float, float, float, float]:
        """The target region's bounding box ``(x0, y0, x1, y1)`` in original pixels (pixel edges)."""
        raster = self.raster
        rows, cols = np.nonzero(raster.mask.any(axis=1))[0], np.nonzero(raster.mask.any(axis=0))[0]
        (ph, pw), (height, width) = raster.pixel, self.geometry.original_size
        return (
            float(cols[0] * pw),
            float(rows[0] * ph),
            float(min((cols[-1] + 1) * pw, width)),
            float(min((rows[-1] + 1) * ph, height)),
        )

    def agreement(self, masks: np.ndarray) -> np.ndarray:
        """``[K]`` IoU of each candidate mask ``[K, H, W]`` with the smooth target region at the
        image's size (:meth:`mask`), band by band: the region is not held whole."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[1:] != tuple(self.geometry.original_size):
            raise ValueError(
                f"candidate masks must be [K, H, W] at the image's size {self.geometry.original_size}, "
                f"got shape {masks.shape}; pass the segmenter's masks for this image"
            )
        bands = self._smooth_bands(self.geometry.original_size)
        inter, union, area = np.zeros(len(masks), np.int64), np.zeros(len(masks), np.int64), 0
        for rows, inside in bands:
            inter += np.count_nonzero(masks[:, rows] & inside, axis=(1, 2))
            union += np.count_nonzero(masks[:, rows] | inside, axis=(1, 2))
            area += int(np.count_nonzero(inside))
        if area == 0:  # a one-patch peak between the pixel samples: mask()'s stand-in, held whole
            region = self.mask()
            inter = np.count_nonzero(masks & region, axis=(1, 2))
            union = np.count_nonzero(masks | region, axis=(1, 2))
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def find_regions(grid: torch.Tensor, geometry: ImageGeometry) -> HeatmapRegions:
    """The regions of one ``[h, w]`` heatmap grid laid out by ``geometry``."""
    if grid.ndim != 2 or tuple(grid.shape) != tuple(geometry.grid):
        raise ValueError(
            f"heatmap must be the latent grid {geometry.grid}, got shape {tuple(grid.shape)}; "
            "pass one image's grid (heatmap.grid[b])"
        )
    grid = grid.detach().float().cpu()
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("heatmap grid holds NaN or infinite values; check the captured attention")
    threshold = region_threshold(grid)
    labels, count = ndimage.label(grid.numpy() >= threshold, structure=_EIGHT)
    values = grid.numpy()
    peaks: dict[int, tuple[int, int]] = {}
    for label in range(1, count + 1):
        inside = np.where(labels == label, values, -math.inf)
        peaks[label] = divmod(int(np.argmax(inside)), values.shape[1])  # first maximum, row-major
    first = divmod(int(torch.argmax(grid)), values.shape[1])
    target = int(labels[first])
    others = sorted(
        (label for label in peaks if label != target),
        key=lambda k: (-values[peaks[k]], peaks[k]),
    )
    return HeatmapRegions(
        grid=grid,
        geometry=geometry,
        threshold=threshold,
        labels=labels.astype(np.int32),
        target=target,
        others=tuple(others),
        peaks=peaks,
    )
