"""Test-only segmenters for the toy worlds, standing in for SAM where SAM weights cannot exist.

Toy scenes have no anti-aliasing. In world v1 objects are flat, so the connected region of exactly
the clicked pixel's colour is the clicked object (:class:`FloodFillSegmenter`). World v2's objects
are textured in two tones, where that region is one stripe or one check; there the connected
non-background region under the point is the object (:class:`ForegroundSegmenter`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scipy import ndimage

from refam.segment.base import Segmenter
from refam.toy.scenes.world import BACKGROUND

__all__ = ["FloodFillSegmenter", "ForegroundSegmenter", "toy_segmenter"]

# Rows labelled at once. Labelling a whole 48-megapixel image would need 192 MB of int32 labels
# plus full-size boolean scratch; bands keep the scratch to a few MB whatever the image size.
_BAND_ROWS = 256


def _band_labels(image: np.ndarray, colour: np.ndarray, rows: slice) -> np.ndarray:
    """4-connected components of ``colour`` within a band of rows (0 = another colour)."""
    labels, _ = ndimage.label(np.all(image[rows] == colour, axis=-1))
    return labels


def _bands(height: int) -> Iterator[slice]:
    for top in range(0, height, _BAND_ROWS):
        yield slice(top, min(top + _BAND_ROWS, height))


def _component(image: np.ndarray, row: int, col: int, out: np.ndarray) -> None:
    """Add to ``out`` (set True) the 4-connected region of ``image[row, col]``'s colour through that pixel.

    Bands are labelled on their own; where the last row of one band touches the first row of the
    next, their labels are one region. A walk over that (small) graph from the clicked label
    gives each band's labels of the region, and a second pass paints them.
    """
    colour = image[row, col].copy()
    bands = list(_bands(image.shape[0]))
    links: dict[tuple[int, int], set[tuple[int, int]]] = {}
    start, above = None, None
    for i, rows in enumerate(bands):
        labels = _band_labels(image, colour, rows)
        if rows.start <= row < rows.stop:
            start = (i, int(labels[row - rows.start, col]))
        if above is not None:
            touching = (above > 0) & (labels[0] > 0)
            for a, b in set(zip(above[touching].tolist(), labels[0][touching].tolist(), strict=True)):
                links.setdefault((i - 1, a), set()).add((i, b))
                links.setdefault((i, b), set()).add((i - 1, a))
        above = labels[-1].copy()
    region, todo = {start}, [start]
    while todo:
        for nxt in links.get(todo.pop(), ()):
            if nxt not in region:
                region.add(nxt)
                todo.append(nxt)
    for i, rows in enumerate(bands):
        keep = [label for band, label in region if band == i]
        if keep:
            out[rows] |= np.isin(_band_labels(image, colour, rows), keep)


class FloodFillSegmenter(Segmenter):
    family = "toy"

    def __init__(self) -> None:
        super().__init__("toy-flood-fill")
        self._image: np.ndarray | None = None
        self._module = torch.nn.Identity()

    @property
    def module(self) -> torch.nn.Module:
        return self._module

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device, dtype=None):  # noqa: ANN001 - nothing to move
        return self

    def _encode(self, image: np.ndarray) -> None:
        self._image = image

    def _forget_image(self) -> None:
        self._image = None

    def _decode(
        self, points: np.ndarray, labels: np.ndarray, multimask: bool, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        image = self._image
        mask = np.zeros(image.shape[:2], dtype=bool)
        for (x, y), label in zip(points, labels, strict=False):
            row, col = min(int(y), image.shape[0] - 1), min(int(x), image.shape[1] - 1)
            if label == 1:
                _component(image, row, col, mask)
                continue
            region = np.zeros_like(mask)
            _component(image, row, col, region)
            np.greater(mask, region, out=mask)  # mask & ~region, without a full-size temporary
        if box is not None:
            _keep_inside(mask, box)
        return mask[None], np.ones(1, dtype=np.float32)


class ForegroundSegmenter(FloodFillSegmenter):
    """The connected region of not-background pixels under the point (or the background region)."""

    def __init__(self, background: tuple[int, int, int] = BACKGROUND) -> None:
        super().__init__()
        self._name = "toy-foreground"
        self._background = np.asarray(background, dtype=np.uint8)

    def _encode(self, image: np.ndarray) -> None:
        # One channel, 1 = object: the flood fill's same-colour regions are then the foreground's
        # connected components.
        self._image = np.any(image != self._background, axis=-1, keepdims=True).astype(np.uint8)


def toy_segmenter(world: str) -> FloodFillSegmenter:
    """The segmenter that returns whole objects in ``world``."""
    return FloodFillSegmenter() if world == "v1" else ForegroundSegmenter()


def _keep_inside(mask: np.ndarray, box: np.ndarray) -> None:
    """Clear the pixels of ``mask`` whose centre lies outside ``box`` (x0, y0, x1, y1), in place."""
    x0, y0, x1, y1 = (float(v) for v in box)
    # pixel (i, j) has its centre at (j + 0.5, i + 0.5): inside when x0 <= j + 0.5 <= x1
    top, bottom = max(0, int(np.ceil(y0 - 0.5))), int(np.floor(y1 - 0.5)) + 1
    left, right = max(0, int(np.ceil(x0 - 0.5))), int(np.floor(x1 - 0.5)) + 1
    mask[:top] = False
    mask[max(bottom, 0) :] = False
    mask[:, :left] = False
    mask[:, max(right, 0) :] = False
