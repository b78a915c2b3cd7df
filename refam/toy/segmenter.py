"""A test-only segmenter for the toy world: the flat-coloured region under the point.

Toy scenes have no anti-aliasing, so the connected region of exactly the clicked pixel's colour
is the clicked object (or the background). It stands in for SAM where SAM weights cannot exist.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from refam.segment.base import Segmenter

__all__ = ["FloodFillSegmenter"]


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
        self, points: np.ndarray, labels: np.ndarray, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        image = self._image
        mask = np.zeros(image.shape[:2], dtype=bool)
        for (x, y), label in zip(points, labels, strict=False):
            row, col = min(int(y), image.shape[0] - 1), min(int(x), image.shape[1] - 1)
            same = np.all(image == image[row, col], axis=-1)
            regions, _ = ndimage.label(same)
            region = regions == regions[row, col]
            mask = mask | region if label == 1 else mask & ~region
        return mask[None], np.ones(1, dtype=np.float32)
