"""Scenes as pixels and exact masks, by one analytic rasterisation rule (a pixel belongs to an object
iff its centre is inside the shape), so every mask matches the rendered image exactly."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from refam.toy.scenes.world import BACKGROUND, COLOURS, Scene, ToyObject

__all__ = ["check_size", "masks", "render", "render_into"]


@lru_cache(maxsize=64)
def _pixel_centres(n: int) -> np.ndarray:
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    centres.flags.writeable = False  # shared across calls through the cache
    return centres


def _window(lo: float, hi: float, n: int) -> tuple[int, int]:
    # Pixel indices whose centres could fall in [lo, hi], with one pixel of slack each side; the exact
    # test runs on the window, so the slack only costs time, never correctness.
    start = max(math.floor(lo * n - 0.5), 0)
    stop = min(math.ceil(hi * n - 0.5) + 1, n)
    return start, max(stop, start)


def _rasterise(obj: ToyObject, height: int, width: int) -> tuple[slice, slice, np.ndarray]:
    """(rows, cols, inside): the object's pixels as a bool array over a window of the image."""
    x0, y0, x1, y1 = obj.box
    c0, c1 = _window(x0, x1, width)
    r0, r1 = _window(y0, y1, height)
    # Slices of one cached grid: a pixel's coordinate never depends on the window it is seen through.
    dx = _pixel_centres(width)[c0:c1][None, :] - obj.cx
    dy = _pixel_centres(height)[r0:r1][:, None] - obj.cy
    r = obj.radius
    if obj.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif obj.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # upward isoceles triangle: apex (cx, cy - r), base from (cx -/+ r, cy + r)
        inside = (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
    return slice(r0, r1), slice(c0, c1), inside


def check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")


def render(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """The scene as an ``[height, width, 3]`` uint8 image."""
    check_size(height, width)
    image = np.empty((height, width, 3), dtype=np.uint8)
    render_into(scene, image)
    return image


@lru_cache(maxsize=64)
def _background(height: int, width: int) -> np.ndarray:
    # Copying a cached canvas is ~10x faster than broadcasting a 3-tuple into a fresh one.
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    canvas.flags.writeable = False
    return canvas


_COLOUR_VALUES: dict[str, np.ndarray] = {name: np.array(rgb, dtype=np.uint8) for name, rgb in COLOURS.items()}


def render_into(scene: Scene, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    np.copyto(image, _background(height, width))
    for obj in scene.objects:
        rows, cols, inside = _rasterise(obj, height, width)
        np.copyto(image[rows, cols], _COLOUR_VALUES[obj.colour], where=inside[..., None])


def masks(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """Exact per-object masks, ``[n_objects, height, width]`` bool, same rule as :func:`render`."""
    check_size(height, width)
    out = np.zeros((len(scene.objects), height, width), dtype=bool)
    for k, obj in enumerate(scene.objects):
        rows, cols, inside = _rasterise(obj, height, width)
        out[k, rows, cols] = inside
    return out
