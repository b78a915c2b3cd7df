"""World-v2 scenes as pixels and exact masks. A pixel belongs to an object iff its centre is inside
the shape; its tone (base or dark) depends only on where its centre falls in the texture grid, so
the same interior patch looks the same wherever the object stands."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from refam.toy.scenes.drawing import check_size
from refam.toy.scenes_v2.world import BACKGROUND, COLOURS, TEXTURE_PERIODS, TEXTURES, Scene, ToyObject, dark

__all__ = ["masks", "render", "render_into", "texture_dark"]


@lru_cache(maxsize=64)
def _pixel_centres(n: int) -> np.ndarray:
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    centres.flags.writeable = False
    return centres


def _window(lo: float, hi: float, n: int) -> tuple[int, int]:
    start = max(math.floor(lo * n - 0.5), 0)
    stop = min(math.ceil(hi * n - 0.5) + 1, n)
    return start, max(stop, start)


def texture_dark(texture: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points (normalised image coordinates) take the dark tone of ``texture``."""
    u = np.mod(x * TEXTURE_PERIODS, 1.0)
    v = np.mod(y * TEXTURE_PERIODS, 1.0)
    if texture == "solid":
        return np.zeros(np.broadcast(u, v).shape, dtype=bool)
    if texture == "checked":
        return (u < 0.5) ^ (v < 0.5)
    if texture == "striped":
        return np.broadcast_to(v >= 0.5, np.broadcast(u, v).shape)
    if texture == "dotted":
        return (u >= 0.25) & (u < 0.75) & (v >= 0.25) & (v < 0.75)
    raise ValueError(f"unknown texture {texture!r}")


def _rasterise(obj: ToyObject, height: int, width: int) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """(rows, cols, inside, dark) over a window of the image."""
    x0, y0, x1, y1 = obj.box
    c0, c1 = _window(x0, x1, width)
    r0, r1 = _window(y0, y1, height)
    x = _pixel_centres(width)[c0:c1][None, :]
    y = _pixel_centres(height)[r0:r1][:, None]
    dx, dy, r = x - obj.cx, y - obj.cy, obj.radius
    if obj.noun == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif obj.noun == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif obj.noun == "triangle":  # apex up, base from (cx -/+ r, cy + r)
        inside = (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
    else:  # diamond
        inside = np.abs(dx) + np.abs(dy) <= r
    return slice(r0, r1), slice(c0, c1), inside, texture_dark(TEXTURES[obj.noun], x, y)


_BASE = {name: np.array(rgb, dtype=np.uint8) for name, rgb in COLOURS.items()}
_DARK = {name: np.array(dark(rgb), dtype=np.uint8) for name, rgb in COLOURS.items()}


def render_into(scene: Scene, image: np.ndarray) -> None:
    image[...] = BACKGROUND
    height, width = image.shape[:2]
    for obj in scene.objects:
        rows, cols, inside, is_dark = _rasterise(obj, height, width)
        window = image[rows, cols]
        np.copyto(window, _BASE[obj.colour], where=(inside & ~is_dark)[..., None])
        np.copyto(window, _DARK[obj.colour], where=(inside & is_dark)[..., None])


def render(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """The scene as an ``[height, width, 3]`` uint8 image."""
    check_size(height, width)
    image = np.empty((height, width, 3), dtype=np.uint8)
    render_into(scene, image)
    return image


def masks(scene: Scene, height: int = 48, width: int = 48) -> np.ndarray:
    """Exact per-object masks (both tones), ``[n_objects, height, width]`` bool."""
    check_size(height, width)
    out = np.zeros((len(scene.objects), height, width), dtype=bool)
    for k, obj in enumerate(scene.objects):
        rows, cols, inside, _ = _rasterise(obj, height, width)
        out[k, rows, cols] = inside
    return out
