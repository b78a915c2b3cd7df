"""Pictures for people: heatmap overlays with the point drawn, mask overlays, token-map grids.

numpy + PIL only, so the CLI and the ComfyUI previews render the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["colorize", "draw_points", "mask_overlay", "heatmap_overlay", "tile"]

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


def colorize(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_ANCHORS) - 1)
    t = (v - lo)[..., None]
    return (_ANCHORS[lo] * (1 - t) + _ANCHORS[hi] * t).round().astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a [0, 1] heatmap of the image's size over the RGB image."""
    colours = colorize(heatmap).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).round().astype(np.uint8)


def mask_overlay(
    image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (30, 144, 255), alpha: float = 0.5
) -> np.ndarray:
    out = image.astype(np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    out[m] = out[m] * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
    return out.round().astype(np.uint8)


def draw_points(
    image: np.ndarray, points: Sequence[tuple[float, float]], radius: int | None = None
) -> np.ndarray:
    """Mark points with a white-ringed star (first point) and rings (others), sized to the image."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    r = radius or max(4, round(min(image.shape[:2]) / 40))
    for i, (x, y) in enumerate(points):
        if i == 0:
            star = []
            for k in range(10):
                ang = -np.pi / 2 + k * np.pi / 5
                rad = r * 1.6 if k % 2 == 0 else r * 0.7
                star.append((x + rad * np.cos(ang), y + rad * np.sin(ang)))
            draw.polygon(star, fill=(0, 255, 128), outline=(255, 255, 255))
        else:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 128), width=max(1, r // 3))
    return np.asarray(pil)


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
