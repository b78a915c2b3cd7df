"""Pictures for people: heatmap overlays with the point drawn, mask overlays, token-map grids.

numpy + PIL only, so the CLI and the ComfyUI previews render the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "colorize",
    "draw_points",
    "gray_uint8",
    "heatmap_overlay",
    "heatmap_overlay_image",
    "mask_overlay",
    "mask_overlay_image",
    "tile",
]

# Anchor colours of a perceptually ordered dark-to-bright map (black-purple-orange-yellow), so a
# heatmap reads the same in grayscale print.
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float32,
)


# Pixels per band of rows: full-size images are processed in bands so no full-size float copy
# exists (a 48-megapixel overlay would otherwise need 1.7 GB of float32 scratch).
_BAND_PIXELS = 1 << 18


def _bands(height: int, width: int) -> Iterator[slice]:
    rows = max(1, _BAND_PIXELS // max(1, width))
    for top in range(0, height, rows):
        yield slice(top, min(top + rows, height))


def _colorize_band(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    t = (v - lo)[..., None]
    return (_ANCHORS[lo] * (1 - t) + _ANCHORS[hi] * t).round().astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    values = np.asarray(values)
    if values.ndim != 2:
        return _colorize_band(values)
    out = np.empty((*values.shape, 3), np.uint8)
    for rows in _bands(*values.shape):
        out[rows] = _colorize_band(values[rows])
    return out


def gray_uint8(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> ``[H, W]`` uint8 (``round(v * 255)``), a band of rows at a time, so a
    full-size heatmap is saved as a gray PNG without two full-size float temporaries."""
    values = np.asarray(values)
    out = np.empty(values.shape, np.uint8)
    for rows in _bands(values.shape[0], int(np.prod(values.shape[1:]))):
        out[rows] = np.clip(values[rows] * 255, 0, 255).round()
    return out


def _blend_table(alpha: float) -> np.ndarray:
    """``table[pixel, colour]``: the float32 blend of two uint8 values, rounded. A blend of uint8
    inputs has only 256² results, so a lookup gives exactly what the float formula gives."""
    levels = np.arange(256, dtype=np.float32)
    return (levels[:, None] * (1 - alpha) + levels[None, :] * alpha).round().astype(np.uint8)


def _uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else np.asarray(image, dtype=np.float32).round().astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a [0, 1] heatmap of the image's size over the RGB image (uint8)."""
    image, heatmap, table = _uint8(image), np.asarray(heatmap), _blend_table(alpha)
    out = np.empty(image.shape, np.uint8)
    for rows in _bands(*image.shape[:2]):
        out[rows] = table[image[rows], colorize(heatmap[rows])]
    return out


def mask_overlay(
    image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (30, 144, 255), alpha: float = 0.5
) -> np.ndarray:
    """Tint the mask's pixels of the RGB image (uint8) with ``colour``; the others stay as they are."""
    # Per channel the tint of a uint8 value is one of 256: a lookup, exactly the float blend.
    tint = (
        np.arange(256, dtype=np.float32)[:, None] * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    ).round().astype(np.uint8)
    out = np.array(_uint8(image))
    m = np.asarray(mask, dtype=bool)
    for rows in _bands(*out.shape[:2]):
        band, inside = out[rows], m[rows]
        for c in range(3):
            channel = band[..., c]
            channel[inside] = tint[channel[inside], c]
    return out


def _marker(draw: Any, x: float, y: float, r: int, star: bool) -> None:
    if star:
        corners = []
        for k in range(10):
            ang = -np.pi / 2 + k * np.pi / 5
            rad = r * 1.6 if k % 2 == 0 else r * 0.7
            corners.append((x + rad * np.cos(ang), y + rad * np.sin(ang)))
        draw.polygon(corners, fill=(0, 255, 128), outline=(255, 255, 255))
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 128), width=max(1, r // 3))


def _marker_radius(shape: tuple[int, ...], radius: int | None) -> int:
    return radius or max(4, round(min(shape[:2]) / 40))


def _draw_marker(out: np.ndarray, x: float, y: float, r: int, star: bool) -> None:
    """Draw one marker into ``out`` through a PIL patch just big enough for it. The patch origin
    is whole pixels left of / above every vertex, so PIL rounds each vertex as on the full image."""
    from PIL import Image, ImageDraw

    reach = math.ceil(1.6 * r) + 2
    h, w = out.shape[:2]
    left, top = max(0, math.floor(x) - reach), max(0, math.floor(y) - reach)
    right, bottom = min(w, math.floor(x) + reach + 1), min(h, math.floor(y) + reach + 1)
    if left >= right or top >= bottom:
        return  # wholly outside the image
    patch = Image.fromarray(np.ascontiguousarray(out[top:bottom, left:right]))
    _marker(ImageDraw.Draw(patch), x - left, y - top, r, star)
    out[top:bottom, left:right] = np.asarray(patch)


def draw_points(
    image: np.ndarray, points: Sequence[tuple[float, float]], radius: int | None = None
) -> np.ndarray:
    """Mark points with a white-ringed star (first point) and rings (others), sized to the image.

    Returns a copy; only small patches around the points go through PIL, so a big image is not
    also copied into PIL's 4-bytes-a-pixel layout and back.
    """
    out = np.array(image, dtype=np.uint8)
    r = _marker_radius(out.shape, radius)
    for i, (x, y) in enumerate(points):
        _draw_marker(out, x, y, r, star=i == 0)
    return out


def _pil_canvas(
    shape: tuple[int, ...], band: Callable[[slice], np.ndarray], points: Sequence[tuple[float, float]]
) -> Any:
    """An RGB PIL image filled a band of rows at a time, points drawn on it: saving a big overlay
    then costs PIL's copy alone, not a full-size numpy picture beside it."""
    from PIL import Image, ImageDraw

    h, w = shape[:2]
    canvas = Image.new("RGB", (w, h))
    for rows in _bands(h, w):
        canvas.paste(Image.fromarray(band(rows)), (0, rows.start))
    draw, r = ImageDraw.Draw(canvas), _marker_radius(shape, None)
    for i, (x, y) in enumerate(points):
        _marker(draw, x, y, r, star=i == 0)
    return canvas


def heatmap_overlay_image(
    image: np.ndarray, heatmap: np.ndarray, points: Sequence[tuple[float, float]] = (), alpha: float = 0.55
) -> Any:
    """``draw_points(heatmap_overlay(image, heatmap, alpha), points)`` as a PIL image, for saving."""
    image, heatmap = _uint8(image), np.asarray(heatmap)
    return _pil_canvas(image.shape, lambda rows: heatmap_overlay(image[rows], heatmap[rows], alpha), points)


def mask_overlay_image(
    image: np.ndarray,
    mask: np.ndarray,
    points: Sequence[tuple[float, float]] = (),
    colour: Sequence[int] = (30, 144, 255),
    alpha: float = 0.5,
) -> Any:
    """``draw_points(mask_overlay(image, mask, colour, alpha), points)`` as a PIL image, for saving."""
    image, mask = _uint8(image), np.asarray(mask, dtype=bool)
    return _pil_canvas(image.shape, lambda rows: mask_overlay(image[rows], mask[rows], colour, alpha), points)


def tile(
    images: Sequence[np.ndarray], columns: int, labels: Sequence[str] | None = None, pad: int = 4
) -> np.ndarray:
    """A grid of equally sized RGB images, with an optional caption strip under each."""
    from PIL import Image, ImageDraw

    if not images:
        raise ValueError("nothing to tile")
    h, w = images[0].shape[:2]
    label_h = 14 if labels else 0
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + label_h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        x, y = pad + c * (w + pad), pad + r * (h + label_h + pad)
        canvas.paste(Image.fromarray(im), (x, y))
        if labels:
            draw.text((x + 2, y + h + 1), labels[i][: max(4, w // 6)], fill=(230, 230, 230))
    return np.asarray(canvas)
