"""Heatmap peaks -> points in pixel coordinates of the ORIGINAL image.

A point is the centre of its latent patch mapped through :class:`ImageGeometry` (the image was
stretched, never cropped, to the model's size), so it is exact for non-square images, resizes
and sizes that are not multiples of the patch size. ``x`` is the column, ``y`` the row, both
continuous: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from refam.attention import ImageGeometry

__all__ = ["Point", "argmax_point", "peak_points", "points_to_json", "upsample_heatmap"]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    score: float
    row: int  # patch row on the latent grid
    col: int  # patch column

    def as_int(self) -> tuple[int, int]:
        """The pixel the point falls in, clamped into the image by construction of the geometry."""
        return int(self.x), int(self.y)


def _check_grid(heatmap: torch.Tensor, geometry: ImageGeometry) -> None:
    if heatmap.ndim != 2 or tuple(heatmap.shape) != tuple(geometry.grid):
        raise ValueError(f"heatmap must be the latent grid {geometry.grid}, got shape {tuple(heatmap.shape)}")


def _point_at(heatmap: torch.Tensor, geometry: ImageGeometry, flat_index: int) -> Point:
    w = geometry.grid[1]
    row, col = divmod(int(flat_index), w)
    x, y = geometry.patch_centre(row, col)
    return Point(x=x, y=y, score=float(heatmap[row, col]), row=row, col=col)


def argmax_point(heatmap: torch.Tensor, geometry: ImageGeometry) -> Point:
    """The paper's ``p_ref = argmax H_e`` (first maximum in row-major order on ties)."""
    _check_grid(heatmap, geometry)
    return _point_at(heatmap, geometry, int(torch.argmax(heatmap)))


def peak_points(
    heatmap: torch.Tensor, geometry: ImageGeometry, k: int = 1, min_distance: int = 1
) -> list[Point]:
    """Up to ``k`` local maxima, strongest first, at least ``min_distance`` patches apart
    (Chebyshev). ``k=1`` is :func:`argmax_point`."""
    _check_grid(heatmap, geometry)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1 patch, got {min_distance}")
    size = 2 * min_distance + 1
    pooled = F.max_pool2d(heatmap[None, None].float(), size, stride=1, padding=min_distance)[0, 0]
    candidates = torch.nonzero(heatmap >= pooled).tolist()
    candidates.sort(key=lambda rc: (-float(heatmap[rc[0], rc[1]]), rc[0], rc[1]))
    chosen: list[tuple[int, int]] = []
    for r, c in candidates:
        if all(max(abs(r - r0), abs(c - c0)) > min_distance for r0, c0 in chosen):
            chosen.append((r, c))
        if len(chosen) == k:
            break
    w = geometry.grid[1]
    return [_point_at(heatmap, geometry, r * w + c) for r, c in chosen]


def upsample_heatmap(grid: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """``[..., h, w]`` -> ``[..., H, W]`` at the original image size.

    Bilinear with half-pixel centres, which puts each patch value at the same place
    :meth:`ImageGeometry.patch_centre` does.
    """
    lead = grid.shape[:-2]
    flat = grid.reshape(-1, 1, *grid.shape[-2:]).float()
    up = F.interpolate(flat, size=geometry.original_size, mode="bilinear", align_corners=False)
    return up.reshape(*lead, *geometry.original_size).clamp_(0.0, 1.0)


def points_to_json(points: list[Point]) -> list[dict[str, float]]:
    """The kijai-style interop format ``[{"x": .., "y": ..}]`` (pixels, original image)."""
    return [{"x": round(p.x, 2), "y": round(p.y, 2)} for p in points]


def point_dict(point: Point) -> dict[str, float | int]:
    return asdict(point)
